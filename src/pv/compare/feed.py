"""The metrics of a stage pair whose values arrive piece by piece.

A stage handed over in parts (``pv.capture.tap.Part``: the attention matrices
at long S, a block of one head's query rows at a time) is never whole on
either side. ``Feed`` measures it as the parts come: each side's pieces are
appended in order, and the rows of the view both sides now cover go through
the chunk measurement :func:`pv.compare.metrics.compare` makes
(``accumulate.measure``; a whole stage in one piece is measured in the very
chunks ``compare`` reads), so the metrics, the worst row and the verdict are
those of the whole pair, while only the values not yet measured are held:
at most a part and one chunk of each side.
"""

from __future__ import annotations

import numpy as np

from pv.compare.accumulate import Acc, Scratch
from pv.compare.align import View
from pv.compare.metrics import CHUNK, Metrics, _finish
from pv.compare.triangle import measure


class Feed:
    """``compare(a, b, view)`` computed from pieces of ``a`` and ``b`` handed in as they arrive."""

    def __init__(self, view: View, *, top_k: int = 5, chunk: int = CHUNK) -> None:
        self.view = view
        self.acc = Acc(view, top_k)
        self.step = max(1, chunk // view.row_len) * view.row_len if view.has_rows else chunk
        self.work = Scratch(min(self.step, max(view.count, 1)), np.dtype(np.float32))
        self.lo = 0  # the view's values measured so far
        self._pieces: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        #: Per piece: whether the feed may change its values (a private copy nobody else reads).
        self._mine: tuple[list[bool], list[bool]] = ([], [])
        self._start = [0, 0]  # the flat index, in each side's values, of its first piece held
        self._end = [0, 0]  # one past the last value handed in
        self._offsets = (view.offset_a, view.offset_b)

    @property
    def held(self) -> int:
        """Bytes of values handed in and not yet measured."""
        return sum(p.nbytes for side in self._pieces for p in side)

    def add(self, side: int, values: np.ndarray, *, private: bool = False) -> None:
        """The next values of side ``side`` (0: a, 1: b), float32, in the order of the flat stage.
        ``private``: nobody else reads ``values`` (the feed may mask them in place)."""
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        self._pieces[side].append(flat)
        self._mine[side].append(flat.flags.writeable and (private or not np.may_share_memory(flat, values)))
        self._end[side] += flat.size
        self._measure()

    def finish(self) -> Metrics:
        """The pair's metrics; raises ``ValueError`` when a side ended before the view did."""
        if self.lo < self.view.count:
            raise ValueError(f"values ended after {self.lo} of the {self.view.count} compared")
        return _finish(self.acc)

    def _measure(self) -> None:
        n = self.view.count
        with np.errstate(invalid="ignore", over="ignore"):  # as compare(): signalling NaNs, float32 squares
            while self.lo < n:
                hi = min(n, self.lo + self.step, *(self._end[s] - self._offsets[s] for s in (0, 1)))
                if hi < n and self.view.has_rows:  # whole rows only: a row's sums are taken in one chunk
                    hi -= (hi - self.lo) % self.view.row_len
                if hi <= self.lo:
                    return
                (a, mine_a), (b, mine_b) = (self._take(s, self._offsets[s] + self.lo, self._offsets[s] + hi)
                                            for s in (0, 1))
                measure(self.acc, a, b, self.lo, self.work, (mine_a, mine_b))
                self.lo = hi
            for s in (0, 1):  # values past the view are never measured
                self._drop(s, self._end[s])

    def _take(self, side: int, lo: int, hi: int) -> tuple[np.ndarray, bool]:
        """Values ``[lo, hi)`` of a side (a view of one piece, or the pieces joined), the ones before
        dropped, and whether the feed may change them."""
        self._drop(side, lo)
        pieces, start = self._pieces[side], self._start[side]
        first = pieces[0]
        if hi - start <= first.size:
            return first[lo - start:hi - start], self._mine[side][0]
        out, at = np.empty(hi - lo, dtype=np.float32), 0
        for piece in pieces:
            chunk = piece[max(0, lo - start):max(0, min(piece.size, hi - start))]
            out[at:at + chunk.size] = chunk
            at += chunk.size
            start += piece.size
            if at == out.size:
                break
        return out, True

    def _drop(self, side: int, before: int) -> None:
        pieces = self._pieces[side]
        while pieces and self._start[side] + pieces[0].size <= before:
            self._start[side] += pieces.pop(0).size
            self._mine[side].pop(0)


__all__ = ["Feed"]
