"""Comparing a partial capture with a whole one: the whole side cut to the partial side's slice.

A partial capture (``pv trace --positions A..B --heads H``,
``pv.capture.partial``) holds query rows ``A .. B-1`` of heads ``H`` of the
attention matrices. Against a capture that holds them whole, ``cut`` gives
the whole side the slice's shape and reads only the slice's values from it
(``Gathered``: one run of ``(B-A)·S`` values per head, front to back, so a
file is still read once and its digest still checked on the way). The view
then numbers rows by their true position and head, and the causal rule
counts each query's keys from its position (``pv.compare.align``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from pv.capture import partial
from pv.capture.store import aprt
from pv.compare import align, metrics
from pv.errors import PvError


class Gathered:
    """The values of ``ranges`` ((start, length), increasing) of ``base``, read as one flat run."""

    def __init__(self, base: metrics.Values, ranges: list[tuple[int, int]]) -> None:
        self.base = base
        self._take = base.take if not isinstance(base, np.ndarray) else (lambda lo, hi: base[lo:hi])
        self.ranges = ranges
        self._starts = list(np.cumsum([0] + [n for _, n in ranges[:-1]]).tolist())
        self.size = sum(n for _, n in ranges)
        self.dtype: np.dtype[Any] = base.dtype

    def take(self, start: int, stop: int) -> np.ndarray:
        pieces: list[np.ndarray] = []
        i = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            virtual, (base, n) = self._starts[i], self.ranges[i]
            count = min(stop, virtual + n) - start
            lo = base + start - virtual
            pieces.append(np.array(self._take(lo, lo + count)))  # a reader reuses its buffer
            start += count
            i += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def verify(self) -> str | None:
        return aprt.verified(self.base)

    def close(self) -> None:
        aprt.close_readers(self.base)


def _slice_of(side: align.Side) -> partial.Slice | None:
    return partial.of_record(side.meta, str(side.path)) if isinstance(side.meta, Mapping) else None


def cut(a: align.Side, b: align.Side) -> tuple[align.Side, align.Side, list[tuple[int, int]] | None, int]:
    """``(a', b', ranges, which)``: when exactly one side is partial, the other (``which``: 0 for A,
    1 for B) described as its cut and the runs of its values the cut holds; else the sides as
    they are and no ranges. Raises ``align.PairError`` when the whole side cannot hold the slice."""
    cuts = (_slice_of(a), _slice_of(b))
    if (cuts[0] is None) == (cuts[1] is None):
        return a, b, None, -1
    which = 0 if cuts[0] is None else 1
    whole, piece = (a, b) if which == 0 else (b, a)
    wanted = cuts[1 - which]
    assert wanted is not None
    name = "AB"[which]
    if whole.shape is None or len(whole.shape) != 3 or piece.shape is None or len(piece.shape) != 3:
        raise align.PairError(f"{name}'s {whole.stage} records no [heads, queries, keys] shape: cannot cut it to "
                              f"the other side's {wanted.describe()}")
    n_heads, rows, keys = whole.shape
    if keys != piece.shape[2] or (wanted.rows or (0, rows))[1] > rows or \
            (wanted.heads is not None and wanted.heads[-1] >= n_heads):
        raise align.PairError(f"{name} holds {list(whole.shape)}: it has no {wanted.describe()} of "
                              f"{list(piece.shape)} to compare")
    lo, hi = wanted.rows or (0, rows)
    heads = wanted.heads if wanted.heads is not None else tuple(range(n_heads))
    ranges = [(h * rows * keys + lo * keys, (hi - lo) * keys) for h in heads]
    shape = (len(heads), hi - lo, keys)
    narrowed = replace(whole, shape=shape, header=aprt.Header(whole.header.layer, int(np.prod(shape))),
                       meta={**whole.meta, "slice": wanted.to_json()})
    return (narrowed, b, ranges, 0) if which == 0 else (a, narrowed, ranges, 1)


def check_runs(manifest_a: Mapping[str, Any] | None, manifest_b: Mapping[str, Any] | None) -> None:
    """One line (``PvError``) when two captures' slices cannot be compared: both partial with
    different slices, or a whole side whose input is shorter than the other's rows."""
    runs = [(m or {}).get("run") or {} for m in (manifest_a, manifest_b)]
    cuts = [partial.Slice.from_json(run.get("slice"), f"{name}'s manifest") for name, run in zip("AB", runs)]
    if cuts[0] is None and cuts[1] is None:
        return
    if cuts[0] is not None and cuts[1] is not None:
        if cuts[0] != cuts[1]:
            raise PvError(f"A is a partial capture of {cuts[0].describe()}, B of {cuts[1].describe()}: compare "
                          "captures of the same slice, or each with a whole capture")
        return
    which = 0 if cuts[0] is None else 1
    wanted, ids = cuts[1 - which], runs[which].get("token_ids")
    assert wanted is not None
    if wanted.rows is not None and isinstance(ids, list) and len(ids) < wanted.rows[1]:
        raise PvError(f"{'AB'[which]} ran {len(ids)} token(s): it has no positions {wanted.rows[0]}..{wanted.rows[1]} "
                      f"to compare with {'AB'[1 - which]}'s partial capture")


__all__ = ["Gathered", "check_runs", "cut"]
