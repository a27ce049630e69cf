"""Pairing the tensors of two captures and deciding how to read each pair.

Two captures of the same run hold the same stages, but not always with the
same description: ours carry a manifest with shapes, other engines' files are
bare APRT tensors. A :class:`View` says how a flat run of float32 values is to
be read for one comparison: its shape and dimension names (so a worst element
can be reported as ``position 3, head 1``), which axis is the token position
and which the head (for per-position and per-head cosine), whether only the
causal part counts, and where each side's values start (the ``lm_head``
last-row rule).

Shapes come, in order of preference, from the manifests, from a model config
given with ``--model``, or not at all (then the pair is compared flat).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture import partial
from pv.capture.model.config import ModelConfig
from pv.capture.store import aprt
from pv.capture.store.steps import LAYOUT_PROBLEM

#: How layout letters read in reports.
DIM_NAMES: dict[str, str] = {
    "S": "position",
    "H": "hidden",
    "NH": "head",
    "KVH": "kv_head",
    "D": "dim",
    "I": "feature",
    "V": "vocab",
    "QKV": "column",
    "NHD": "column",
    "N": "element",
}


class PairError(Exception):
    """Two tensors that cannot be compared (counts, layers or shapes differ)."""


@dataclass(frozen=True)
class View:
    """How to read one pair of flat tensors for comparison.

    ``shape``/``layout`` describe the compared region (after the last-row rule),
    ``row_len`` is the length of the innermost run of values that shares one
    position (and head); rows are the unit of per-position and per-head sums.
    ``offset_a``/``offset_b`` are element offsets into each side's values.
    """

    shape: tuple[int, ...]
    layout: tuple[str, ...]
    causal: bool = False
    #: Sliding window of the attention matrices (keys k > q - window count), None: all k <= q.
    window: int | None = None
    offset_a: int = 0
    offset_b: int = 0
    #: Position number of the first compared position (S-1 under the last-row rule; A for a
    #: partial capture's query rows A..B).
    position_base: int = 0
    notes: tuple[str, ...] = ()
    #: Keys before the first compared query (None: keys minus queries, as for a whole matrix).
    past: int | None = None
    #: The heads the rows are of, when a partial capture kept only some (None: 0, 1, ...).
    head_ids: tuple[int, ...] | None = None

    @property
    def cached(self) -> int:
        """Keys the first compared query sees before its own: P of ``P+q+1``."""
        return self.past if self.past is not None else self.shape[-1] - self.shape[-2]

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 0

    @property
    def names(self) -> tuple[str, ...]:
        if self.causal and self.layout == ("NH", "S", "S"):
            return ("head", "query", "key")
        return tuple(DIM_NAMES.get(d, d.lower()) for d in self.layout)

    @property
    def has_rows(self) -> bool:
        return len(self.shape) >= 2

    @property
    def row_len(self) -> int:
        return self.shape[-1] if self.has_rows else max(self.count, 1)

    @property
    def n_rows(self) -> int:
        return self.count // self.row_len if self.has_rows else 1

    def row_index(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Position and head number of each row (None when the layout has none)."""
        if not self.has_rows:
            return None, None
        lead = self.shape[:-1]
        lead_names = self.layout[:-1]
        grid = np.indices(lead).reshape(len(lead), -1) if lead else np.zeros((0, 1), np.int64)
        pos = head = None
        for axis, name in enumerate(lead_names):
            if name == "S" and pos is None:
                pos = grid[axis].astype(np.int64) + self.position_base
            elif name in ("NH", "KVH") and head is None:
                head = grid[axis].astype(np.int64)
                if self.head_ids is not None:
                    head = np.asarray(self.head_ids, dtype=np.int64)[head]
        return pos, head

    def row_counts(self) -> np.ndarray:
        """Elements compared in each row: ``row_len``, or ``P+q+1`` on the causal part.

        ``P`` (keys minus queries) is the number of cached positions before the
        first query: 0 for a prefill, the past length at a decode step.
        """
        if self.causal:
            nq = self.shape[-2]
            per_head = np.arange(1, nq + 1, dtype=np.int64) + self.cached
            if self.window is not None:
                per_head = np.minimum(per_head, self.window)
            return np.tile(per_head, self.n_rows // nq)
        return np.full(self.n_rows, self.row_len, dtype=np.int64)

    def unravel(self, flat_index: int) -> dict[str, int]:
        """A flat index of the compared region as named coordinates."""
        coords = np.unravel_index(int(flat_index), self.shape) if self.shape else ()
        out: dict[str, int] = {}
        for axis, (name, value, dim) in enumerate(zip(self.names, coords, self.layout)):
            v = int(value)
            if dim == "S" and (name == "position" or (name == "query" and self.layout.index("S") == axis)):
                v += self.position_base
            elif dim == "NH" and self.head_ids is not None:
                v = self.head_ids[v]
            out[name] = v
        return out


@dataclass(frozen=True)
class Side:
    """One tensor to compare: its values, and what is known about its shape."""

    path: Path
    stage: str | None
    layer: int | None
    header: aprt.Header
    shape: tuple[int, ...] | None = None
    layout: tuple[str, ...] | None = None
    dtype: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def _dims_from_count(
    stage: stage_table.Stage, count: int, config: ModelConfig
) -> tuple[int, ...] | None:
    """Solve the layout for S given a model config; None when the count does not fit."""
    d = config.dims(1)
    other = 1
    s_power = 0
    for name in stage.layout:
        if name == "S":
            s_power += 1
        else:
            other *= d.size(name)
    if other <= 0 or count % other:
        return None
    rest = count // other
    if s_power == 0:
        s = 1 if rest == 1 else None
    elif s_power == 1:
        s = rest
    else:
        root = round(math.sqrt(rest))
        s = root if root * root == rest else None
    if s is None or s <= 0:
        return None
    return stage.shape(config.dims(s))


def _split_heads(
    stage: stage_table.Stage, shape: tuple[int, ...], config: ModelConfig | None
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``attention`` is [S, NH*D]; read it as [S, NH, D] when heads are known."""
    layout = stage.layout
    if stage.name == "attention" and config is not None and len(shape) == 2:
        nh, dh = config.num_attention_heads, config.head_dim
        if shape[1] == nh * dh:
            return (shape[0], nh, dh), ("S", "NH", "D")
    return shape, layout


def shape_of(
    side: Side, config: ModelConfig | None
) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """The shape one side carries (manifest) or that the config implies; None if unknown."""
    stage = stage_table.BY_NAME.get(side.stage or "")
    if side.shape is not None:
        layout = side.layout
        if stage is not None and (layout is None or tuple(layout) == stage.layout):
            return _split_heads(stage, side.shape, config)
        if layout is not None and len(layout) == len(side.shape):
            return side.shape, tuple(layout)
        return side.shape, tuple(f"d{i}" for i in range(len(side.shape)))
    if stage is not None and config is not None:
        solved = _dims_from_count(stage, side.header.count, config)
        if solved is not None:
            return _split_heads(stage, solved, config)
    return None


def plan_view(a: Side, b: Side, config: ModelConfig | None = None) -> View:
    """Decide how to compare ``a`` (candidate) against ``b`` (reference), or raise PairError."""
    stage = stage_table.BY_NAME.get(a.stage or b.stage or "")
    for name, side in (("A", a), ("B", b)):
        problem = side.meta.get(LAYOUT_PROBLEM) if isinstance(side.meta, Mapping) else None
        if isinstance(problem, str):  # a generation step's file that generate.json cannot lay out
            raise PairError(f"{name}'s {problem}")
    if a.layer != b.layer:
        raise PairError(f"layers differ: A is layer {a.layer}, B is layer {b.layer}")
    if a.header.layer != b.header.layer:
        raise PairError(
            f"APRT header layers differ: A says {a.header.layer}, B says {b.header.layer}"
        )
    na, nb = a.header.count, b.header.count
    sa, sb = shape_of(a, config), shape_of(b, config)
    notes: list[str] = []
    if na != nb:
        if stage is not None and stage.name == "lm_head":
            return _last_row_view(a, b, sa, sb, config)
        raise PairError(f"element counts differ: A has {na}, B has {nb}")
    if sa is not None and sb is not None and sa[0] != sb[0]:
        raise PairError(f"shapes differ: A is {list(sa[0])}, B is {list(sb[0])}")
    if na == 0:
        # Nothing to read as rows (a zero dimension would divide by zero below).
        return View((0,), ("N",), notes=("both tensors are empty: nothing to compare",))
    known = sa or sb
    causal = stage is not None and stage.mask == "causal"
    if known is None:
        if causal:
            notes.append("shape unknown: compared flat, so the causal rule could not be applied")
        elif stage is not None:
            notes.append("shape unknown: compared flat (give --model for named dimensions)")
        return View((na,), ("N",), notes=tuple(notes))
    shape, layout = known
    # The mask policy is the stage's, whatever the shape: a decode step's
    # [heads, S_new, P + S_new] keeps key k for query j when k <= P + j.
    if causal and not (len(shape) == 3 and shape[-1] >= shape[-2]):
        notes.append(f"shape {list(shape)} is not [heads, queries, keys >= queries]: "
                     "compared without the causal rule")
        causal = False
    window = _window(b) or _window(a) if causal else None  # the reference's mask policy first
    if window is not None:
        notes.append(f"sliding window {window}: keys more than {window - 1} before the query left out")
    cut = _slice(a, b)
    if cut is not None:  # both sides hold the same query rows and heads of the matrices
        return View(shape, layout, causal=causal, window=window, notes=tuple(notes),
                    position_base=cut.rows[0] if cut.rows else 0, past=cut.rows[0] if cut.rows else None,
                    head_ids=cut.heads)
    return View(shape, layout, causal=causal, window=window, notes=tuple(notes))


def _slice(a: Side, b: Side) -> partial.Slice | None:
    """The slice both sides hold (a partial capture's; ``pv.compare.partial`` cuts a whole side to
    it first), or None; a PairError when they hold different ones."""
    cuts = [partial.of_record(side.meta, str(side.path)) if isinstance(side.meta, Mapping) else None
            for side in (a, b)]
    if cuts[0] != cuts[1]:
        shown = ["the whole matrices" if c is None else c.describe() for c in cuts]
        raise PairError(f"partial captures differ: A holds {shown[0]}, B holds {shown[1]}")
    return cuts[0]


def _window(side: Side) -> int | None:
    """The sliding window a manifest records for this file (``mask: "sliding_window:W"``)."""
    mask = side.meta.get("mask") if isinstance(side.meta, Mapping) else None
    if isinstance(mask, str) and mask.startswith("sliding_window:"):
        try:
            value = int(mask.partition(":")[2])
        except ValueError:
            return None
        return value if value > 0 else None
    return None


def _last_row_view(a: Side, b: Side, sa: Any, sb: Any, config: ModelConfig | None) -> View:
    """``lm_head`` where one side kept only the last position: compare that row."""
    na, nb = a.header.count, b.header.count
    small, big = min(na, nb), max(na, nb)
    vocab = config.vocab_size if config is not None else None
    for known in (sa, sb):
        if known is not None and len(known[0]) == 2:
            vocab = known[0][1]
    if vocab is None:
        vocab = small
    if small == 0 or vocab <= 0:
        raise PairError(
            f"element counts differ: A has {na}, B has {nb} "
            "(an empty tensor cannot be compared with a non-empty one)"
        )
    if small != vocab or big % vocab:
        raise PairError(
            f"element counts differ: A has {na}, B has {nb} "
            f"(not one row of {vocab} logits against whole rows)"
        )
    rows = big // vocab
    offset = big - vocab
    note = (
        f"last-row rule: compared position {rows - 1} of the {rows}-row side against the 1-row side"
    )
    return View(
        (1, vocab),
        ("S", "V"),
        offset_a=offset if na == big else 0,
        offset_b=offset if nb == big else 0,
        position_base=rows - 1,
        notes=(note,),
    )
