"""Progress of a long phase (a model capture, a test run) on stderr, without touching stdout.

On a terminal one line is rewritten in place, at most every ``interval`` seconds
(``label: 120 files, last attn_softmax layer 7``); elsewhere (CI logs, pipes)
only the start and the end of the phase are written, one line each, so logs stay
short. stdout is never used: ``--format json`` output stays one clean document.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from typing_extensions import Self


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, *, interval: float = 0.25,
                 unit: str = "files") -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.unit = unit
        self.count = 0
        self._start = 0.0
        self._shown = 0.0
        try:
            self._tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self._tty = False

    def __enter__(self) -> Self:
        self._start = self._shown = time.monotonic()
        if not self._tty:
            self._write(f"{self.label} ...\n")
        return self

    def step(self, stage: str | None = None, layer: int | None = None) -> None:
        """One more unit done (the signature of ``capture``'s ``on_write``)."""
        self.count += 1
        now = time.monotonic()
        if self._tty and now - self._shown >= self.interval:
            self._shown = now
            where = f", last {stage}" + (f" layer {layer}" if layer is not None else "") \
                if stage else ""
            self._write(f"\r{self.label}: {self.count} {self.unit}{where}\x1b[K")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        took = time.monotonic() - self._start
        verdict = "done" if kind is None else "stopped"
        end = f"{self.label}: {verdict}, {self.count} {self.unit} in {took:.1f} s"
        self._write(("\r" + end + "\x1b[K\n") if self._tty else end + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr never stops the work
            pass
