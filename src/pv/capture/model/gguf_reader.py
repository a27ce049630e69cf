"""Opening a GGUF file: the ``gguf`` package's reader, faster, with one clear error.

``gguf.GGUFReader`` parses the file through an ``np.memmap``, and each of the
many small slices it takes while parsing builds another ``np.memmap`` object,
which costs far more than the bytes it reads: for Gemma 3's 262,144-token
vocabulary that is most of the reader's time (about 10 s on the development
machine). Reading through a plain ``ndarray`` view of the same mapping gives
the same fields and tensors, the weights still mapped and not copied, in about
a third of the time (``benchmarks/bench_gguf_load.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pv.errors import PvError, require


@functools.cache
def _reader_class() -> Any:
    gguf = require("gguf")
    import numpy as np

    class Reader(gguf.GGUFReader):  # type: ignore[misc,name-defined]
        """``GGUFReader`` whose ``data`` is a plain ndarray view of the file's mapping."""

        @property
        def data(self) -> Any:
            return self._plain

        @data.setter
        def data(self, value: Any) -> None:
            self._plain = np.asarray(value).view(np.ndarray)  # the same buffer: nothing copied

    return Reader


def open_gguf(path: str | Path) -> Any:
    """A reader of the GGUF file at ``path``; a missing or damaged file is one ``PvError`` line."""
    reader_class = _reader_class()
    try:
        return reader_class(str(path), "r")
    except FileNotFoundError:
        raise PvError(f"model file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, struct.error, IndexError... on damage
        raise PvError(f"{path}: unreadable GGUF file ({type(exc).__name__}: {exc})") from None
