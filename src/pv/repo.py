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


__all__ = ["find_root", "git", "git_text", "repo_root"]
