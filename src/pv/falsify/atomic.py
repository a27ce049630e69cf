"""All-or-nothing file writes for evidence records and rewritten contracts.

A reader (or a crash) must only ever see the old file or the new one: data goes
to a temporary file in the destination folder, is flushed to disk, and then
takes the final name in one ``rename``/``link`` system call. Same folder means
same filesystem, so the rename cannot degrade into a copy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def replace_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, keeping the file's permission bits."""
    target = Path(path)
    tmp = _write_temp(target, data)
    try:
        try:
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        except FileNotFoundError:
            pass
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(target.parent)


def create_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with ``data`` atomically; FileExistsError if the name is taken.

    ``os.link`` refuses an existing destination, so two writers that somehow
    chose the same name can never overwrite each other's record.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(target, data)
    try:
        os.link(tmp, target)
    finally:
        _unlink_quietly(tmp)
    _fsync_dir(target.parent)
