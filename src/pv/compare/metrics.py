"""Per-stage comparison metrics, accumulated in float64 over bounded chunks.

One pass over both tensors fills a handful of float64 sums per row (a row is
the run of values sharing one position and head): sum a^2, sum b^2, sum d^2
with d = a - b, plus sum |d|, the largest |d| and the top-K. Every summary
metric (cosine, RMS, SQNR, ...) is then a function of those sums, listed in the
:data:`METRICS` table. ``b`` is always the reference.

Why these choices:

* float64 accumulation: a float32 sum of a million squares loses ~4 digits,
  which is exactly the precision a 0.99999 cosine needs.
* the dot product is never accumulated: ``a.b = (|a|^2 + |b|^2 - |d|^2) / 2``.
  Near cosine 1 this is more accurate than a direct dot (the small quantity
  |d|^2 is computed directly) and it saves a pass.
* chunks of ``CHUNK`` elements converted into two reused float64 buffers
  keep memory flat whatever the tensor size; reading goes through
  ``np.memmap`` because mapping page-cached files is cheaper than copying
  them. The cost is memory traffic, so each chunk takes as few passes as
  numpy allows (see :func:`compare`), all sums are BLAS dots short enough to
  stay on the calling thread, and NaN/Inf bookkeeping runs only for a chunk
  whose sums of squares come out non-finite.
* values that are not finite on either side are counted (NaN and Inf per
  side, positions whose NaN-ness or Inf value disagrees) and left out of the
  finite metrics, so one NaN does not turn every number into NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pv.compare.align import View
from pv.compare.reductions import kth_bound, row_sumsq

#: Elements per chunk: 256K float64 values = 2 MiB per buffer (two buffers).
#: Every numpy call costs a few microseconds whatever its size, and the worker
#: threads contend for the GIL between calls; measured on the benchmark,
#: 256K-element chunks beat L2-sized 64K ones by ~10% on one thread and ~25%
#: on two, while 1M-element chunks fall out of the cache and lose again.
CHUNK = 1 << 18
#: Guard for divisions by a reference norm that may be zero.
EPS = 1e-30
#: How many disagreeing non-finite positions are kept as examples.
EXAMPLES = 5


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


class _Acc:
    """Running float64 sums for one comparison (internal to :func:`compare`)."""

    def __init__(self, view: View, top_k: int):
        self.view = view
        self.top_k = top_k
        n_rows = view.n_rows if view.has_rows else 1
        self.row_aa = np.zeros(n_rows)
        self.row_bb = np.zeros(n_rows)
        self.row_dd = np.zeros(n_rows)
        self.row_cnt = view.row_counts() if view.has_rows else np.array([view.count], np.int64)
        self.aa = self.bb = self.dd = 0.0
        self.sum_abs = 0.0
        self.max_abs = -1.0
        self.max_flat = 0
        self.max_a = self.max_b = 0.0
        self.excluded = 0
        self.nan_a = self.nan_b = self.inf_a = self.inf_b = 0
        self.nan_mismatch = self.inf_mismatch = 0
        self.examples: list[dict[str, Any]] = []
        self.top_abs = np.zeros(0)
        self.top_idx = np.zeros(0, dtype=np.int64)
        self.top_a = np.zeros(0)
        self.top_b = np.zeros(0)


def _nonfinite(acc: _Acc, A: np.ndarray, B: np.ndarray, lo: int, row_lo: int) -> None:
    """Count and exclude positions where either side is NaN or Inf (slow path, rare)."""
    na, nb = np.isnan(A), np.isnan(B)
    ia, ib = np.isinf(A), np.isinf(B)
    acc.nan_a += int(na.sum())
    acc.nan_b += int(nb.sum())
    acc.inf_a += int(ia.sum())
    acc.inf_b += int(ib.sum())
    nan_bad = na ^ nb
    inf_bad = (ia | ib) & ~(na | nb) & (A != B)
    acc.nan_mismatch += int(nan_bad.sum())
    acc.inf_mismatch += int(inf_bad.sum())
    bad = np.flatnonzero(nan_bad | inf_bad)
    for i in bad[: max(0, EXAMPLES - len(acc.examples))]:
        acc.examples.append(
            {"index": acc.view.unravel(lo + int(i)), "a": _num(A[i]), "b": _num(B[i])}
        )
    drop = ~(np.isfinite(A) & np.isfinite(B))
    n_drop = int(drop.sum())
    acc.excluded += n_drop
    if acc.view.has_rows:
        rows = np.flatnonzero(drop) // acc.view.row_len + row_lo
        np.subtract.at(acc.row_cnt, rows, 1)
    A[drop] = 0.0
    B[drop] = 0.0


def _update_top(acc: _Acc, T: np.ndarray, A: np.ndarray, B: np.ndarray, lo: int) -> None:
    """Merge this chunk's largest |d| into the running top-K.

    Only values above the current K-th largest can enter, so a cheap
    comparison pass usually leaves a handful of candidates and the
    partial sort runs on those, not on the whole chunk. Before K values
    are known, :func:`~pv.compare.reductions.kth_bound` supplies the threshold.
    """
    k = min(acc.top_k, T.size)
    if k <= 0:
        return
    if acc.top_abs.size >= acc.top_k:
        cand = np.flatnonzero(T > acc.top_abs[-1])
    else:
        cand = np.flatnonzero(T >= kth_bound(T, k))
    if cand.size > k:
        cand = cand[np.argpartition(T[cand], cand.size - k)[cand.size - k :]]
    allv = np.concatenate([acc.top_abs, T[cand]])
    alli = np.concatenate([acc.top_idx, cand.astype(np.int64) + lo])
    alla = np.concatenate([acc.top_a, A[cand]])
    allb = np.concatenate([acc.top_b, B[cand]])
    order = np.lexsort((alli, -allv))[: acc.top_k]
    acc.top_abs, acc.top_idx, acc.top_a, acc.top_b = (
        allv[order],
        alli[order],
        alla[order],
        allb[order],
    )


def _num(x: Any) -> float:
    return float(x)


def compare(
    a: np.ndarray, b: np.ndarray, view: View, *, top_k: int = 5, chunk: int = CHUNK
) -> Metrics:
    """Compare flat float32 values ``a`` (candidate) with ``b`` (reference) as ``view`` says.

    ``a``/``b`` may be memory maps; only ``chunk``-sized pieces are ever
    converted, so memory use is two ``chunk``-sized float64 buffers.

    Per chunk, in order: both sides are converted to float64 (one buffer
    each), the row sums of a^2 and b^2 are taken (and, only when they are not
    finite, the rare NaN/Inf bookkeeping runs), then ``a``'s buffer is turned
    into d = a - b in place, then into |d| in place; the row sums of d^2, the
    sum and the maximum of |d| read it there. The values reported next to the
    largest differences are read back from the float32 sources, which the
    float64 conversion represents exactly.
    """
    n_total = view.count
    if a.size < view.offset_a + n_total or b.size < view.offset_b + n_total:
        raise ValueError("view does not fit the tensors")
    # Plain ndarray views: slicing an np.memmap goes through Python-level hooks.
    a, b = np.asarray(a), np.asarray(b)
    acc = _Acc(view, top_k)
    rows_mode = view.has_rows
    row_len = view.row_len
    step = max(1, chunk // row_len) * row_len if rows_mode else chunk
    cap = min(step, max(n_total, 1))
    bufX, bufY = np.empty(cap), np.empty(cap)
    causal = view.causal
    s = view.shape[-1] if causal else 0
    nq = view.shape[-2] if causal else 1  # queries per head; keys - queries = cached positions
    cols = np.arange(s) if causal else None
    for lo in range(0, n_total, step):
        hi = min(n_total, lo + step)
        n = hi - lo
        src_a = a[view.offset_a + lo : view.offset_a + hi]
        src_b = b[view.offset_b + lo : view.offset_b + hi]
        X, Y = bufX[:n], bufY[:n]
        # A signalling NaN (0x7FBFFFFF) raises the "invalid" flag when widened to float64; it
        # arrives as a quiet NaN, which the NaN bookkeeping below counts. numpy would print a
        # RuntimeWarning on the user's terminal for it.
        with np.errstate(invalid="ignore"):
            np.copyto(X, src_a)
            np.copyto(Y, src_b)
        row_lo = lo // row_len if rows_mode else 0
        r = n // row_len if rows_mode else 1
        X2, Y2 = X.reshape(r, -1), Y.reshape(r, -1)
        if causal:
            assert cols is not None
            q = np.arange(row_lo, row_lo + r) % nq + (s - nq)
            upper = cols[None, :] > q[:, None]
            if view.window is not None:  # outside the sliding window: masked, like the future
                upper |= cols[None, :] <= q[:, None] - view.window
            np.copyto(X2, 0.0, where=upper)
            np.copyto(Y2, 0.0, where=upper)
        ra, rb = row_sumsq(X2), row_sumsq(Y2)
        vals_a: np.ndarray = src_a
        vals_b: np.ndarray = src_b
        if not math.isfinite(float(ra.sum()) + float(rb.sum())):
            _nonfinite(acc, X, Y, lo, row_lo)
            ra, rb = row_sumsq(X2), row_sumsq(Y2)
            # Excluded positions read as 0 from here on, as in the sums.
            vals_a, vals_b = X.copy(), Y.copy()
        np.subtract(X, Y, out=X)
        rd = row_sumsq(X2)
        if rows_mode:
            acc.row_aa[row_lo : row_lo + r] += ra
            acc.row_bb[row_lo : row_lo + r] += rb
            acc.row_dd[row_lo : row_lo + r] += rd
        else:
            acc.aa += float(ra[0])
            acc.bb += float(rb[0])
            acc.dd += float(rd[0])
        T = np.abs(X, out=X)
        acc.sum_abs += float(T.sum())
        m = float(T.max()) if n else 0.0
        if m > acc.max_abs:
            i = int(T.argmax())
            acc.max_abs, acc.max_flat = m, lo + i
            acc.max_a, acc.max_b = float(vals_a[i]), float(vals_b[i])
        if acc.top_k and (acc.top_abs.size < acc.top_k or m > acc.top_abs[-1]):
            _update_top(acc, T, vals_a, vals_b, lo)
    return _finish(acc)


def _finish(acc: _Acc) -> Metrics:
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
    )
