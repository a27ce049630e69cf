"""A stage file kept inside a pack: the path readers see, and where its bytes really are.

A packed capture (``pv.capture.store.pack``) keeps its stages as members of
one file, ``stages.pack``: each member is the exact bytes of the APRT v1 file
the stage would have had on its own, and the manifest records where it starts.
``open_capture`` hands readers a ``PackedPath`` for such a stage: the path the
stage would have (``step-3/layer-2/attn_scores.bin``), which is what messages
show and what ``relative_to`` and the stage table read, carrying the pack and
the offset. The readers of ``pv.capture.store.aprt`` read the member through
it, so every comparison reads a packed stage exactly as a stage file, and
code that opens the path itself fails (there is no such file) instead of
reading the pack's first member.

Only the path is a ``pathlib`` path; a path derived from it (its ``parent``,
``relative_to``) is a plain one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

    _Base = Path
else:  # the concrete class (PosixPath, WindowsPath): pathlib refuses to subclass Path before 3.12
    _Base = type(Path())


class PackedPath(_Base):
    """``logical`` (the stage file's usual path), stored in ``pack`` from byte ``offset`` on."""

    pack: Path | None = None
    offset: int = 0

    def __new__(cls, logical: str | Path, pack: str | Path, offset: int) -> Self:
        self = super().__new__(cls, logical)
        self.pack = Path(pack)
        self.offset = int(offset)
        return self

    def __init__(self, logical: str | Path, pack: str | Path, offset: int) -> None:
        if sys.version_info >= (3, 12):  # pathlib's own __init__ parses the path from 3.12 on
            super().__init__(logical)

    def with_segments(self, *segments: Any) -> Path:
        """Paths derived from this one (3.12 on) are plain paths."""
        return Path(*segments)

    def __reduce__(self) -> Any:
        return (PackedPath, (str(self), self.pack, self.offset))


def location(path: Any) -> tuple[Any, int, bool]:
    """Where ``path``'s bytes are: (file to open, offset of its APRT header, whether it is a member)."""
    pack = getattr(path, "pack", None)
    if isinstance(path, PackedPath) and pack is not None:
        return pack, path.offset, True
    return path, 0, False
