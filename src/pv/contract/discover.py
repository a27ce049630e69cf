"""Find contract files under the paths a user names, and the repository they live in."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pv.errors import PvError
from pv.repo import find_root

SUFFIXES = (".yaml", ".yml")


def find_contracts(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named directly, plus ``*.yaml``/``*.yml`` found recursively under directories.

    Hidden directories (``.git``, ``.venv``) are skipped. A path that does not
    exist, or a directory holding no contract files, is a usage error: the user
    most likely mistyped it, and "0 files, all valid" would hide that.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(_walk(path))
            if not inside:
                raise PvError(f"{path}: no contract files (*.yaml, *.yml) in this directory")
            candidates = inside
        elif path.exists() or path.is_symlink():
            candidates = [path]
        else:
            raise PvError(f"{path}: no such file or directory")
        for candidate in candidates:
            key = Path(os.path.abspath(candidate))
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def _walk(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(SUFFIXES) and not name.startswith("."):
                yield Path(folder) / name


repo_root = find_root
