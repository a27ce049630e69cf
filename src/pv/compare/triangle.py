"""A chunk of causal rows measured over the keys its queries can see.

An attention matrix compared under the causal rule has every key after a
query's position masked on both sides (``accumulate.mask``): those values are
zero in every sum, never a difference, and half of a square matrix. A chunk of
rows whose queries sit at positions up to ``q`` can see keys ``0 .. q`` only,
so :func:`measure` hands :func:`pv.compare.accumulate.measure` the chunk's
first ``q + 1`` columns and leaves the rest unread: on average half the bytes
of ``attn_scores`` and ``attn_softmax``, the bulk of a long-context
comparison. Positions keep their numbers in the chunk (``accumulate.Rect``), so the
largest differences, their values and the per-position figures are the same
positions as over the whole rows; the sums differ from a walk over the whole
rows only by the zeros left out. A chunk whose queries see every key, or any
other view, goes whole.
"""

from __future__ import annotations

import numpy as np

from pv.compare import accumulate
from pv.compare.accumulate import Acc, Rect, Scratch


def reach(acc: Acc, row_lo: int, rows: int) -> int:
    """How many leading keys the queries of ``rows`` rows from ``row_lo`` can see (at most every key)."""
    view = acc.view
    nq, width = view.shape[-2], view.row_len
    if rows >= nq:
        return int(width)
    first, last = row_lo % nq, (row_lo + rows - 1) % nq
    top = last if first <= last else nq - 1  # the chunk wraps into the next head
    return int(min(width, top + view.cached + 1))


def measure(acc: Acc, A: np.ndarray, B: np.ndarray, lo: int, work: Scratch,
            mutable: tuple[bool, bool] = (False, False)) -> None:
    """``accumulate.measure`` of one chunk, over the keys its queries see where that is fewer than all."""
    view = acc.view
    if view.causal and view.has_rows and A.dtype == B.dtype == work.dtype and A.size:
        width = view.row_len
        row_lo, rows = lo // width, A.size // width
        cols = reach(acc, row_lo, rows)
        if cols < width and accumulate.measure(acc, A.reshape(rows, width)[:, :cols],
                                               B.reshape(rows, width)[:, :cols], lo, work, mutable, Rect(cols, width)):
            return
    accumulate.measure(acc, A, B, lo, work, mutable)


__all__ = ["measure", "reach"]
