"""Putting a fuzz case on disk: regular files, or the special kinds that must never be read."""

from __future__ import annotations

import os
from pathlib import Path

#: Where each non-regular kind points (links) or what it is.
LINK_TARGETS = {
    "devzero": "/dev/zero",
    "procmem": "/proc/self/mem",
    "procstatus": "/proc/self/status",
    "dangling": "does-not-exist",
}


def place(path: Path, content: bytes | str) -> None:
    """Write ``content`` at ``path``: bytes as a file, a ``FILE_KINDS`` name as that kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink():
            os.rmdir(path)
        else:
            path.unlink()
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "fifo":
        os.mkfifo(path)
    elif content == "folder":
        path.mkdir()
    elif content == "loop":
        path.symlink_to(path.name)
    else:
        path.symlink_to(LINK_TARGETS[content])


def describe(content: bytes | str) -> str:
    if isinstance(content, str):
        return f"<{content}>"
    return f"{len(content)} bytes"
