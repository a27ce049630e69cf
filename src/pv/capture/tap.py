"""The tap: what a runner hands each stage to, as it produces it.

A runner calls its tap after each step of its computation, in computation
order, with the stage's tensor (``tap(stage, layer, tensor, **meta)``); it asks
``tap.wants(stage, layer)`` first only where making the tensor costs something
(the attention matrices, a cast), and tells the tap which stages it cannot
hand over on this model (``not_applicable``). A tap never changes the tensor it
sees, and nothing a runner computes depends on its tap, so capture is additive.

``NullTap`` wants nothing: a forward without a capture runs the same straight
line and pays one call per capture point. ``pv.capture.disktap.DiskTap``
writes stages to a capture directory; a tap that hands them to a comparator
instead (two runners compared while they run) needs nothing more than this
protocol, because every runner delivers its stages in order.

**Parts.** A stage too large to hold at once (the attention matrices
``[NH, S, P + S]`` at long S) may be handed over in parts: ``part=Part`` in
the call's ``meta`` says the tensor ``[1, rows, Sk]`` holds a block of query
rows of one head, the ``index``-th of ``count`` in C order, so the parts laid
end to end are the stage's values. A stage's parts arrive in index order,
those of ``attn_scores`` and ``attn_softmax`` of one layer interleaved (each
block's probabilities follow its scores). ``parts`` is the one rule runners
use to split; a tap that keeps whole stages assembles them (``Parts``; the
disk tap does), so splitting changes no file and no value. A runner that
hands a block over as the last thing it does with it says so with
``own=True``: the tap may then keep the block and change it (mask it in
place) without a copy; otherwise a tap that keeps a block past the call
copies it, unless the runner lends every tensor (``borrow``).

``InOrder`` is for the runners whose own order differs from pv's within a
layer's q/k/v branch (llama.cpp and transformers finish the query branch,
RoPE included, before the value projection that pv's ``qkv_matmul`` needs): it
holds those stages and hands them on sorted, as soon as a stage outside the
branch arrives or the pass ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any, Protocol

from pv import stages as stage_table
from pv.errors import PvError


class Tap(Protocol):
    """Receives a runner's stages in computation order; must not change them.

    A tap may also set ``skips_masked`` (absent: False): it never reads the
    attention values the causal mask hides, so a runner may hand them over as 0
    (``pv.capture.causal``)."""

    #: Set by a runner that never changes a tensor after handing it over: the tap may keep
    #: the tensor itself instead of a private copy (a copy made on the runner's thread).
    borrow: bool

    def wants(self, stage: str, layer: int | None) -> bool:
        """Whether a call for ``stage`` in ``layer`` would be kept (``layer`` None: a whole-model stage)."""
        ...

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        """One stage's tensor; a stage the tap does not want is ignored. ``meta`` goes to its record
        (``provenance``, ``mask``, ``source``, ``dtype_captured``)."""
        ...

    def not_applicable(self, stage: str, reason: str) -> None:
        """A stage this runner cannot hand over on this model, and why."""
        ...


class NullTap:
    """Wants nothing and keeps nothing: the tap of a plain forward."""

    borrow = False

    def wants(self, stage: str, layer: int | None) -> bool:
        return False

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        return None

    def not_applicable(self, stage: str, reason: str) -> None:
        return None


#: The one null tap every runner uses by default.
NULL_TAP = NullTap()

#: Attention matrices whose float32 values would pass this many bytes are handed over in parts.
PART_BYTES = 32 << 20
#: The most float32 bytes of one part (never more than ``PART_BYTES``). Small enough that the
#: buffers a part passes through stay in cache and come from the allocator's free lists: a block of
#: 32 MiB is a fresh mapping each time, and faulting its pages in cost a fifth of a streamed bisection.
BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class Part:
    """Where a part lies in its stage: rows ``[lo, hi)`` of head ``head``, the ``index``-th of
    ``count`` parts of a stage whose whole shape is ``shape`` (``[NH, S, Sk]`` for the attention
    matrices; a stage without a head axis has head 0 and its leading dimensions' rows flattened)."""

    index: int
    count: int
    head: int
    lo: int
    hi: int
    shape: tuple[int, ...]


def parts(heads: int, rows: int, cols: int, *, whole_heads: bool = False) -> list[Part] | None:
    """The parts ``[heads, rows, cols]`` attention matrices go to the tap in, or None when they go
    whole (at most ``PART_BYTES``): blocks of query rows of one head each, of at most
    ``BLOCK_BYTES`` (whole heads when ``whole_heads``: a softmax over the query axis needs every row
    of a column at once)."""
    if heads * rows * cols * 4 <= PART_BYTES or heads * rows <= 1:
        return None
    per = rows if whole_heads else max(1, min(rows, min(PART_BYTES, BLOCK_BYTES) // (4 * max(cols, 1))))
    spans = [(h, lo, min(rows, lo + per)) for h in range(heads) for lo in range(0, rows, per)]
    return [Part(i, len(spans), h, lo, hi, (heads, rows, cols)) for i, (h, lo, hi) in enumerate(spans)]


def row_blocks(shape: tuple[int, ...]) -> list[Part] | None:
    """Blocks of at most ``PART_BYTES`` of whole rows (the last axis) of a stage over ``PART_BYTES``, or
    None when it is small enough to go whole: how a large stage (lm_head [S, V]) is split. Blocks
    this large because each is one product with the whole weight (``[V, H]``), read again per block."""
    row_len = shape[-1] if shape else 1
    rows = prod(shape[:-1]) if len(shape) > 1 else 1
    if rows * row_len * 4 <= PART_BYTES or rows <= 1:
        return None
    per = max(1, PART_BYTES // (4 * max(row_len, 1)))
    spans = [(lo, min(rows, lo + per)) for lo in range(0, rows, per)]
    return [Part(i, len(spans), 0, lo, hi, tuple(shape)) for i, (lo, hi) in enumerate(spans)]


class Parts:
    """Assembles stages handed over in parts (``part=Part``), for taps that keep whole stages."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int | None], list[Any]] = {}

    def add(self, stage: str, layer: int | None, values: Any, part: Part) -> Any | None:
        """The whole stage (a tensor or an array, as the parts were) once its last part arrives, else None."""
        held = self._held.setdefault((stage, layer), [])
        if part.index != len(held):
            raise PvError(f"stage {stage} layer {layer}: part {part.index} of {part.count} arrived out of order")
        held.append(values.reshape(-1))
        if len(held) < part.count:
            return None
        del self._held[(stage, layer)]
        import numpy as np

        if isinstance(values, np.ndarray):
            return np.concatenate(held).reshape(part.shape)
        import torch

        return torch.cat(held).reshape(part.shape)


#: The stages of a layer's q/k/v branch: the fused projection needs all three
#: projections, which other runners compute only after the query (and key) branch.
QKV_BRANCH = frozenset({"qkv_matmul", "qkv_bias", "q_norm", "k_norm", "q_post_rope", "k_post_rope"})


class InOrder:
    """A tap in front of a tap: holds ``group``'s stages and hands them on in computation order.

    The held stages go on, sorted, before the first stage outside ``group``
    that arrives, or at ``flush()`` (the end of the pass). ``keep`` makes the
    private copy of a held tensor when the runner may reuse its memory before
    the hand-on (transformers' modules are not ours).
    """

    def __init__(self, tap: Tap, group: frozenset[str] = QKV_BRANCH,
                 keep: Callable[[Any], Any] | None = None) -> None:
        self.tap = tap
        self.group = group
        self.keep = keep
        self.borrow = False
        self.skips_masked = bool(getattr(tap, "skips_masked", False))
        self._held: list[tuple[tuple[int, int, int], str, int | None, Any, dict[str, Any]]] = []

    def wants(self, stage: str, layer: int | None) -> bool:
        return self.tap.wants(stage, layer)

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        if not self.tap.wants(stage, layer):
            return
        if stage in self.group:
            held = tensor if self.keep is None else self.keep(tensor)
            self._held.append((stage_table.sort_key(stage, layer), stage, layer, held, meta))
            return
        self.flush()
        self.tap(stage, layer, tensor, **meta)

    def not_applicable(self, stage: str, reason: str) -> None:
        self.tap.not_applicable(stage, reason)

    def flush(self) -> None:
        """Hand on every held stage, in computation order."""
        held, self._held = sorted(self._held, key=lambda item: item[0]), []
        for _, stage, layer, tensor, meta in held:
            self.tap(stage, layer, tensor, **meta)


def wants_any(tap: Tap, n_layers: int) -> bool:
    """Whether ``tap`` wants any stage of a model with ``n_layers`` layers (a runner that must set
    something up to capture, hooks or a graph callback, does so only then)."""
    return any(tap.wants(s.name, None if s.whole_model else layer)
               for s in stage_table.STAGES for layer in range(n_layers))
