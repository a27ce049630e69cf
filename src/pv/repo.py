"""The repository a command works in: its root, and what git says about it.

Found without running git (the nearest folder holding ``.git``, as
``git rev-parse --show-toplevel`` answers for a checkout or a worktree), so
``pv validate`` on thousands of files never starts a process per file; git
itself runs only for what only git knows (commits, modified files, old
revisions), always with a timeout and never through a shell.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=256)
def find_root(start: Path) -> Path | None:
    """The nearest ancestor of ``start`` (itself included) holding ``.git``, or None."""
    folder = Path(os.path.abspath(start))
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def repo_root(start: Path | None = None) -> Path:
    """The repository containing ``start`` (default: the working directory), else ``start``."""
    here = (start or Path.cwd()).resolve()
    return find_root(here) or here


def git(root: Path, *args: str, timeout: float = 60) -> bytes | None:
    """``git -C root ARGS`` stdout, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_text(root: Path, *args: str, timeout: float = 60) -> str | None:
    out = git(root, *args, timeout=timeout)
    return None if out is None else out.decode("utf-8", "replace")


def head_commit(root: Path) -> str | None:
    out = git_text(root, "rev-parse", "--verify", "-q", "HEAD")
    return out.strip() if out and out.strip() else None


def modified(root: Path, rel_paths: list[str]) -> list[str] | None:
    """Which of ``rel_paths`` differ from HEAD (staged, unstaged or untracked); None outside git."""
    if not rel_paths:
        return []
    out = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *rel_paths)
    if out is None:
        return None
    changed: list[str] = []
    entries = out.decode("utf-8", "replace").split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, name = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename names its source next
            i += 1
        changed.append(name)
    return sorted(set(changed))


def show(root: Path, rev: str, rel_path: str) -> bytes | None:
    """The bytes of ``rel_path`` at ``rev``, or None when it is not there."""
    return git(root, "show", f"{rev}:{rel_path}")


def blob_sha1(data: bytes) -> str:
    """The id git gives a blob with these bytes (to compare files with a commit's tree)."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_blobs(root: Path, rev: str, rel_folder: str) -> dict[str, str] | None:
    """path -> blob id of every file under ``rel_folder`` at ``rev``; None when git cannot say."""
    out = git(root, "ls-tree", "-r", "-z", rev, "--", rel_folder)
    if out is None:
        return None
    blobs: dict[str, str] = {}
    for line in out.decode("utf-8", "replace").split("\0"):
        meta, _, name = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            blobs[name] = parts[2]
    return blobs


__all__ = ["blob_sha1", "find_root", "git", "git_text", "head_commit", "modified", "repo_root", "show",
           "tree_blobs"]
