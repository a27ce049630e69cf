"""Partial captures: a window of the attention matrices' query rows and heads.

At long S a layer's ``attn_scores`` and ``attn_softmax`` are ``[NH, S, S]``
each, most of a capture's bytes. ``pv trace --positions A..B --heads H`` keeps
query rows ``A .. B-1`` of heads ``H`` of those two stages (every other stage
is captured whole): a file ``[len(H), B-A, S]``, its manifest record carrying
the ``slice`` it holds, the run block the same. ``pv diff`` compares such a
file with the same slice of a full capture (``pv.compare.partial``).

A runner that hands its matrices over in parts (``pv.capture.tap.Part``) is
sliced part by part, so the tap never holds the whole matrices either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pv import stages as stage_table
from pv.capture.tap import Part
from pv.errors import PvError

#: The stages a slice applies to: the attention matrices, [NH, S(query), S(key)].
SLICED = frozenset({"attn_scores", "attn_softmax"})


@dataclass(frozen=True)
class Slice:
    """Query rows ``[lo, hi)`` (None: all) of heads ``heads`` (None: all)."""

    rows: tuple[int, int] | None = None
    heads: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"positions": None if self.rows is None else list(self.rows),
                "heads": None if self.heads is None else list(self.heads)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Slice | None:
        """The slice a manifest records (None: a whole capture); one line naming ``where`` if malformed."""
        if data is None:
            return None
        try:
            rows, heads = data.get("positions"), data.get("heads")
            lo_hi = None if rows is None else (int(rows[0]), int(rows[1]))
            hs = None if heads is None else tuple(int(h) for h in heads)
            if (lo_hi is not None and (len(rows) != 2 or not 0 <= lo_hi[0] < lo_hi[1])) or \
                    (hs is not None and (not hs or list(hs) != sorted(set(hs)) or hs[0] < 0)):
                raise ValueError
        except (AttributeError, TypeError, ValueError, IndexError):
            raise PvError(f"{where}: malformed slice {data!r} (expected positions [A, B] and sorted heads)") from None
        return cls(lo_hi, hs)

    def describe(self) -> str:
        rows = "all positions" if self.rows is None else f"positions {self.rows[0]}..{self.rows[1]}"
        heads = "all heads" if self.heads is None else "heads " + ",".join(map(str, self.heads))
        return f"{rows}, {heads}"

    def check(self, positions: int, heads: int) -> None:
        """One line (exit 2) when the slice lies outside a run of ``positions`` tokens and ``heads`` heads."""
        if self.rows is not None and self.rows[1] > positions:
            raise PvError(f"--positions {self.rows[0]}..{self.rows[1]} is outside the input's {positions} "
                          f"position(s) (0..{positions})")
        if self.heads is not None and self.heads[-1] >= heads:
            raise PvError(f"--heads {self.heads[-1]} is outside the model's {heads} attention head(s) (0..{heads})")

    def cut(self, tensor: Any) -> Any:
        """``tensor`` [NH, S, Sk] cut to the slice."""
        if self.heads is not None:
            tensor = tensor[list(self.heads)]
        if self.rows is not None:
            tensor = tensor[:, self.rows[0]:self.rows[1]]
        return tensor


def parse(positions: str | None, heads: str | None) -> Slice | None:
    """``--positions A..B`` (end exclusive) and ``--heads 0,3 | 2..6``; None when both are absent."""
    if positions is None and heads is None:
        return None
    rows = None
    if positions is not None:
        lo_s, sep, hi_s = positions.strip().partition("..")
        try:
            lo, hi = int(lo_s), int(hi_s)
        except ValueError:
            lo = hi = -1
        if not sep or lo < 0 or hi <= lo:
            raise PvError(f"--positions '{positions}': expected A..B with 0 <= A < B (query rows A to B-1)")
        rows = (lo, hi)
    picked = None
    if heads is not None:
        try:
            picked = stage_table.parse_layers(heads)
        except PvError:
            raise PvError(f"--heads '{heads}': expected 0 | 0,3,5 | 2..6 (end exclusive)") from None
    return Slice(rows, picked)


class Cutter:
    """Cuts the sliced stages a tap receives, whole or in parts, keeping only the slice's rows."""

    def __init__(self, piece: Slice) -> None:
        self.slice = piece
        self._held: dict[tuple[str, int | None], list[Any]] = {}

    def whole(self, tensor: Any) -> Any:
        return self.slice.cut(tensor)

    def part(self, stage: str, layer: int | None, tensor: Any, part: Part) -> Any | None:
        """The cut stage once ``part`` is the last, else None (a part outside the slice is let go)."""
        held = self._held.setdefault((stage, layer), [])
        rows, heads = self.slice.rows or (0, part.shape[1]), self.slice.heads
        lo, hi = max(rows[0], part.lo), min(rows[1], part.hi)
        if (heads is None or part.head in heads) and lo < hi:
            held.append(tensor[:, lo - part.lo:hi - part.lo])
        if part.index < part.count - 1:
            return None
        del self._held[(stage, layer)]
        import torch

        n_heads = part.shape[0] if heads is None else len(heads)
        return torch.cat(held, dim=1).reshape(n_heads, rows[1] - rows[0], part.shape[2])


def of_record(meta: Mapping[str, Any], where: str) -> Slice | None:
    """The slice a file's manifest record says it holds."""
    return Slice.from_json(meta.get("slice"), where)


__all__ = ["SLICED", "Cutter", "Slice", "of_record", "parse"]
