"""Per-stage comparison metrics, from a handful of sums filled chunk by chunk.

One pass over both tensors fills a few sums per row (a row is the run of
values sharing one position and head): sum a^2, sum b^2, sum d^2 with
d = a - b, plus sum |d|, the largest |d| and the top-K
(:mod:`pv.compare.accumulate` says how, and which of those sums need float64).
Every summary metric (cosine, RMS, SQNR, ...) is then a function of those
sums, listed in the ``pv.compare.metric_table`` table. ``b`` is always the
reference.

Why these choices:

* the dot product is never accumulated: ``a.b = (|a|^2 + |b|^2 - |d|^2) / 2``.
  Near cosine 1 this is more accurate than a direct dot (the small quantity
  |d|^2 is computed directly) and it saves a pass.
* chunks of ``CHUNK`` elements, read from an array (a memory map, a tensor in
  memory) or a reader that hashes the file's bytes as it hands them over
  (``pv.capture.store.aprt.ValueReader``), keep memory flat whatever the
  tensor size. The cost is memory traffic, so each chunk takes as few passes
  as numpy allows, all in float32 (no conversion), with sums short enough to
  stay on the calling thread.
* values that are not finite on either side are counted (NaN and Inf per
  side, positions whose NaN-ness or Inf value disagrees) and left out of the
  finite metrics, so one NaN does not turn every number into NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from pv.compare.accumulate import Acc, Scratch
from pv.compare.align import View
from pv.compare.systematic import Systematic, fit
from pv.compare.triangle import measure

#: Elements per chunk: 256K float32 values = 1 MiB per buffer.
#: Every numpy call costs a few microseconds whatever its size, and the worker
#: threads contend for the GIL between calls, so chunks are larger than L2.
CHUNK = 1 << 18
#: Guard for divisions by a reference norm that may be zero.
EPS = 1e-30


@dataclass(frozen=True)
class Metrics:
    """What one comparison found. ``b`` (the reference) is the denominator everywhere."""

    count: int  # elements compared (finite on both sides, causal part only)
    cosine: float
    max_abs: float
    max_index: dict[str, int]
    max_a: float
    max_b: float
    rms: float
    mean_abs: float
    rel_err: float  # RMS(d) / RMS(b)
    sqnr_db: float
    nmse: float
    ref_rms: float
    nan_a: int
    nan_b: int
    inf_a: int
    inf_b: int
    nan_mismatch: int
    inf_mismatch: int
    nonfinite_examples: tuple[dict[str, Any], ...] = ()
    top: tuple[dict[str, Any], ...] = ()
    #: Position numbers, and per position: cosine, RMS(d), RMS(b) (empty when no position axis).
    positions: tuple[int, ...] = ()
    position_cosine: tuple[float, ...] = ()
    position_rms: tuple[float, ...] = ()
    position_ref_rms: tuple[float, ...] = ()
    head_cosine: tuple[float, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The fit a = (1 + scale) b + bias and its standard errors (``pv.compare.systematic``).
    systematic: Systematic | None = None

    @property
    def position_rel(self) -> tuple[float, ...]:
        return tuple(d / max(r, EPS) for d, r in zip(self.position_rms, self.position_ref_rms))

    @property
    def worst_position(self) -> tuple[int, float] | None:
        """The position with the largest relative RMS error, and that error."""
        rel = self.position_rel
        if not rel:
            return None
        i = int(np.argmax(rel))
        return self.positions[i], float(rel[i])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["worst_position"] = list(self.worst_position) if self.worst_position else None
        if self.systematic is not None:
            out["systematic"].update(scale_z=self.systematic.scale_z, bias_z=self.systematic.bias_z)
        return out


def cosine_from_sums(aa: float, bb: float, dd: float) -> float:
    """Cosine from squared norms; both zero is 1.0 (equal), exactly one zero is 0.0."""
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    ab = 0.5 * (aa + bb - dd)
    return float(min(1.0, max(-1.0, ab / math.sqrt(aa * bb))))


def _cosines(aa: np.ndarray, bb: np.ndarray, dd: np.ndarray) -> tuple[float, ...]:
    """:func:`cosine_from_sums` over arrays of sums (per position or per head)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.clip(0.5 * (aa + bb - dd) / np.sqrt(aa * bb), -1.0, 1.0)
    cos = np.where((aa == 0) & (bb == 0), 1.0, np.where((aa == 0) | (bb == 0), 0.0, cos))
    return tuple(cos.tolist())  # tolist: Python floats in one C call


def sqnr_db(bb: float, dd: float) -> float:
    """Reference power over error power in dB: +inf when equal, -inf when the reference is zero."""
    if dd == 0.0:
        return math.inf
    if bb == 0.0:
        return -math.inf
    return 10.0 * math.log10(bb / dd)


class Chunked(Protocol):
    """Flat float32 values handed out front to back (``pv.capture.store.aprt.ValueReader``)."""

    size: int
    dtype: np.dtype[Any]

    def take(self, start: int, stop: int) -> np.ndarray: ...


#: What :func:`compare` reads: an array (a memory map, a tensor in memory) or a :class:`Chunked`.
Values = np.ndarray | Chunked


def _source(x: Values) -> tuple[Callable[[int, int], np.ndarray], int, np.dtype[Any]]:
    if isinstance(x, np.ndarray):
        arr = np.asarray(x)  # plain ndarray: slicing an np.memmap goes through Python-level hooks
        return (lambda lo, hi: arr[lo:hi]), arr.size, arr.dtype
    return x.take, x.size, x.dtype


def compare(a: Values, b: Values, view: View, *, top_k: int = 5, chunk: int = CHUNK) -> Metrics:
    """Compare flat float32 values ``a`` (candidate) with ``b`` (reference) as ``view`` says.

    ``a``/``b`` are arrays (memory maps included) or :class:`Chunked` readers,
    read ``chunk`` values at a time, so memory stays a few ``chunk``-sized
    buffers whatever the tensor size. Values of another dtype are compared in
    float64 throughout. What one chunk costs: :func:`pv.compare.accumulate.measure`.
    """
    n_total = view.count
    take_a, size_a, dt_a = _source(a)
    take_b, size_b, dt_b = _source(b)
    if size_a < view.offset_a + n_total or size_b < view.offset_b + n_total:
        raise ValueError("view does not fit the tensors")
    acc = Acc(view, top_k)
    step = max(1, chunk // view.row_len) * view.row_len if view.has_rows else chunk
    f32 = dt_a == np.float32 and dt_b == np.float32
    work = Scratch(min(step, max(n_total, 1)), np.dtype(np.float32 if f32 else np.float64))
    # A signalling NaN (0x7FBFFFFF) raises "invalid" when widened; float32 squares of
    # values beyond 1.8e19 overflow (and are redone in float64): numpy would warn for both.
    with np.errstate(invalid="ignore", over="ignore"):
        for lo in range(0, n_total, step):
            hi = min(n_total, lo + step)
            measure(acc, take_a(view.offset_a + lo, view.offset_a + hi),
                     take_b(view.offset_b + lo, view.offset_b + hi), lo, work)
    return _finish(acc)


def _finish(acc: Acc) -> Metrics:
    view = acc.view
    if view.has_rows:
        aa, bb, dd = float(acc.row_aa.sum()), float(acc.row_bb.sum()), float(acc.row_dd.sum())
    else:
        aa, bb, dd = acc.aa, acc.bb, acc.dd
        acc.row_aa[0], acc.row_bb[0], acc.row_dd[0] = aa, bb, dd
        acc.row_cnt[0] -= acc.excluded
    count = int(acc.row_cnt.sum())
    rms = math.sqrt(dd / count) if count else 0.0
    ref_rms = math.sqrt(bb / count) if count else 0.0
    pos, head = view.row_index()
    positions: tuple[int, ...] = ()
    pcos: tuple[float, ...] = ()
    prms: tuple[float, ...] = ()
    pref: tuple[float, ...] = ()
    hcos: tuple[float, ...] = ()
    if pos is None and not view.has_rows:
        # Flat: the whole tensor is one "position" for the per-position rule.
        pos = np.zeros(1, dtype=np.int64)
    if pos is not None:
        uniq, inv = np.unique(pos, return_inverse=True)
        p_aa, p_bb, p_dd, p_n = (
            np.bincount(inv, weights=w, minlength=uniq.size)
            for w in (acc.row_aa, acc.row_bb, acc.row_dd, acc.row_cnt.astype(float))
        )
        positions = tuple(uniq.tolist()) if view.has_rows else ()
        pcos = _cosines(p_aa, p_bb, p_dd)
        safe_n = np.maximum(p_n, 1.0)
        prms = tuple(np.sqrt(p_dd / safe_n).tolist())
        pref = tuple(np.sqrt(p_bb / safe_n).tolist())
        if not view.has_rows:
            pcos = ()
    if head is not None:
        uniq_h, inv_h = np.unique(head, return_inverse=True)
        h_aa, h_bb, h_dd = (
            np.bincount(inv_h, weights=w, minlength=uniq_h.size)
            for w in (acc.row_aa, acc.row_bb, acc.row_dd)
        )
        hcos = _cosines(h_aa, h_bb, h_dd)
    top = tuple(
        {"index": view.unravel(int(i)), "a": float(x), "b": float(y), "abs_diff": float(v)}
        for v, i, x, y in zip(acc.top_abs, acc.top_idx, acc.top_a, acc.top_b)
        if v > 0.0
    )
    max_abs = max(acc.max_abs, 0.0)
    return Metrics(
        count=count,
        cosine=cosine_from_sums(aa, bb, dd),
        max_abs=max_abs,
        max_index=view.unravel(acc.max_flat) if view.count else {},
        max_a=acc.max_a,
        max_b=acc.max_b,
        rms=rms,
        mean_abs=acc.sum_abs / count if count else 0.0,
        rel_err=rms / max(ref_rms, EPS) if rms else 0.0,
        sqnr_db=sqnr_db(bb, dd),
        nmse=dd / max(bb, EPS) if dd else 0.0,
        ref_rms=ref_rms,
        nan_a=acc.nan_a,
        nan_b=acc.nan_b,
        inf_a=acc.inf_a,
        inf_b=acc.inf_b,
        nan_mismatch=acc.nan_mismatch,
        inf_mismatch=acc.inf_mismatch,
        nonfinite_examples=tuple(acc.examples),
        top=top,
        positions=positions if view.has_rows else (0,),
        position_cosine=pcos,
        position_rms=prms,
        position_ref_rms=pref,
        head_cosine=hcos,
        notes=view.notes
        + (("no finite elements on both sides: nothing to measure",) if count == 0 else ()),
        systematic=fit(acc.columns, (acc.row_aa, acc.row_bb, acc.row_dd, acc.row_cnt),
                       view.row_index()[0]),
    )
