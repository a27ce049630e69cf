"""One chunk at a time into the running sums of a comparison (the inner loop of ``metrics.compare``).

For each chunk, a handful of sums per row (a row is the run of values sharing
one position and head): sum a^2, sum b^2, sum d^2 with d = a - b, plus sum |d|,
the largest |d| and the top-K; :func:`pv.compare.metrics.compare` turns them
into metrics. Which sums need float64, measured on every comparison the tests
make and on adversarial inputs (``tests/compare/test_precision.py``):

* within a chunk, none: float32 inputs are never converted. Squares are summed
  by BLAS dots over runs of at most ``reductions.F32_RUN`` (512) values, |d| by
  dots with ones over such runs; each such partial has a relative error of a
  few float32 units (6e-8) however long the tensor.
* across runs, rows and chunks, all of them: the partials are added in float64,
  so the error stays that of one run. A float32 total over a million squares
  would lose ~4 digits, which is what a 0.99999 cosine needs.
* a chunk whose values float32 squares cannot hold (overflow beyond
  |x| = 1.8e19, or a row of values so small that squares below 1.2e-38 weigh
  in its sum), or holding a row whose cosine the float32 partials would move
  by a tenth of a printed digit or more (a row scaled by 1/8 against its
  reference, see :func:`cosine_safe`), is redone in float64
  (:func:`float32_enough`): rare outside failing stages, and exact.

The dot product is never accumulated: ``a.b = (|a|^2 + |b|^2 - |d|^2) / 2``
(``metrics.cosine_from_sums``). Near cosine 1 the small quantity |d|^2 is
computed directly, and errors in |a|^2 and |b|^2 enter only squared, which is
what lets them be float32 partials. Values not finite on either side are
counted and left out of the finite sums (:func:`nonfinite`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pv.compare.align import View
from pv.compare.reductions import kth_bound, row_sumsq, total
from pv.compare.systematic import Columns, Sums, column_sums

#: How many disagreeing non-finite positions are kept as examples.
EXAMPLES = 5
#: A row of n float32 values whose sum of squares is below n * 2^-100 may hold
#: squares under float32's normal range (2^-126), which lose their digits: such
#: a row is summed in float64 (the underflow could cost at most 2^-26 of it).
_TINY32 = 2.0**-100
#: Relative error of a float32 sum of squares over one run (at most 512 values), bounded
#: generously: measured at most 1e-7 on the test inputs.
_EPS32 = 2.5e-7
#: Largest cosine error factor K (see :func:`cosine_safe`) float32 sums may carry: K * _EPS32
#: is then at most 5e-8 where cosines print 6 decimals, 5e-6 where they print 4.
_K_NEAR_ONE = 5e-8 / _EPS32
_K_ELSEWHERE = 5e-6 / _EPS32


class Acc:
    """Running float64 sums for one comparison."""

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
        #: Per-channel sums for the systematic fit (``pv.compare.systematic``), rows only.
        self.columns = Columns(view.row_len) if view.has_rows else None


class Scratch:
    """Reused buffers of one comparison: d, masked or cleaned copies, the float64 redo."""

    def __init__(self, cap: int, dtype: np.dtype[Any]):
        self.cap, self.dtype = cap, dtype
        self.d = np.empty(cap, dtype)
        self._pairs: dict[np.dtype[Any], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def copies(self, A: np.ndarray, B: np.ndarray, dtype: Any = None,
               which: tuple[bool, bool] = (True, True)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``A`` and ``B`` copied (converted) into buffers of their own (only those ``which`` names; the
        others are returned as they are), and a d buffer of that dtype."""
        dt = np.dtype(dtype or self.dtype)
        if dt not in self._pairs:
            self._pairs[dt] = (np.empty(self.cap, dt), np.empty(self.cap, dt),
                               self.d if dt == self.dtype else np.empty(self.cap, dt))
        X, Y, D = (buf[: A.size] for buf in self._pairs[dt])
        X, Y = X.reshape(A.shape), Y.reshape(B.shape)  # a chunk's leading columns come as rows
        if which[0]:
            np.copyto(X, A)
        if which[1]:
            np.copyto(Y, B)
        return X if which[0] else A, Y if which[1] else B, D


@dataclass(frozen=True)
class Rect:
    """A chunk given as the first ``cols`` of its rows of ``width`` (``pv.compare.triangle``)."""

    cols: int
    width: int

    def flat(self, i: Any) -> Any:
        """Where element ``i`` of the rows' first ``cols`` lies in the chunk's whole rows."""
        return (i // self.cols) * self.width + i % self.cols


def nonfinite(acc: Acc, A: np.ndarray, B: np.ndarray, lo: int, row_lo: int) -> np.ndarray:
    """Count and exclude positions where either side is NaN or Inf (slow path, rare); returns
    where they are."""
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
            {"index": acc.view.unravel(lo + int(i)), "a": float(A[i]), "b": float(B[i])}
        )
    drop: np.ndarray = ~(np.isfinite(A) & np.isfinite(B))
    n_drop = int(drop.sum())
    acc.excluded += n_drop
    if acc.view.has_rows:
        rows = np.flatnonzero(drop) // acc.view.row_len + row_lo
        np.subtract.at(acc.row_cnt, rows, 1)
    A[drop] = 0.0
    B[drop] = 0.0
    return drop


def update_top(acc: Acc, T: np.ndarray, A: np.ndarray, B: np.ndarray, lo: int, rect: Rect | None = None) -> None:
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
    at = cand.astype(np.int64)
    allv = np.concatenate([acc.top_abs, T[cand]])
    alli = np.concatenate([acc.top_idx, (at if rect is None else rect.flat(at)) + lo])
    alla = np.concatenate([acc.top_a, A.flat[cand]])
    allb = np.concatenate([acc.top_b, B.flat[cand]])
    order = np.lexsort((alli, -allv))[: acc.top_k]
    acc.top_abs, acc.top_idx, acc.top_a, acc.top_b = (
        allv[order],
        alli[order],
        alla[order],
        allb[order],
    )


def mask(X2: np.ndarray, Y2: np.ndarray, row_lo: int, view: View) -> np.ndarray:
    """Zero what the causal (and sliding-window) mask leaves out, on both sides; returns where.

    Whether a value is masked depends only on ``j - q`` (its key index less its query's position),
    so the rows of one head are a strided view of one boolean template (``_band``), built once per
    shape: no mask is computed per chunk."""
    r, s = X2.shape
    nq = view.shape[-2]
    spans, i = [], 0
    while i < r:  # rows of one head each: the query positions run on without a wrap
        q = (row_lo + i) % nq
        n = min(r - i, nq - q)
        spans.append((i, n, _band(q + view.cached, n, s, view.window)))
        i += n
    for i, n, band in spans:
        np.copyto(X2[i:i + n], 0.0, where=band)
        np.copyto(Y2[i:i + n], 0.0, where=band)
    return spans[0][2] if len(spans) == 1 else np.concatenate([b for _, _, b in spans])


#: ``window -> (K, t)``: ``t[x]`` is whether a key ``x - K`` places after its query is masked.
_TEMPLATES: dict[int | None, tuple[int, np.ndarray]] = {}


def _band(q0: int, rows: int, keys: int, window: int | None) -> np.ndarray:
    """The mask of ``rows`` queries at positions ``q0 ..`` over ``keys`` keys: a read-only view whose
    element ``[i, j]`` is ``t[K - q0 - i + j]`` (row stride -1)."""
    K, t = _TEMPLATES.get(window, (-1, np.zeros(0, bool)))
    if K < q0 + rows - 1 or t.size < K - q0 + keys:
        K = max(q0 + rows - 1, 2 * K)
        x = np.arange(K + max(keys, t.size - K)) - K
        t = x > 0
        if window is not None:
            t |= x <= -window
        if len(_TEMPLATES) > 64:
            _TEMPLATES.clear()
        _TEMPLATES[window] = (K, t)
    return np.lib.stride_tricks.as_strided(t[K - q0:], shape=(rows, keys), strides=(-1, 1), writeable=False)


def diffs(A2: np.ndarray, B2: np.ndarray, D: np.ndarray,
          columns: bool = False) -> tuple[np.ndarray, np.ndarray, Sums | None]:
    """Row sums (float64) of d^2 with d = a - b, |d| left in ``D`` (flat), and with ``columns`` the
    per-channel sums of the systematic fit (taken while ``D`` still holds d)."""
    D2 = D.reshape(A2.shape)
    np.subtract(A2, B2, out=D2)
    cols = column_sums(B2, D2) if columns else None
    return row_sumsq(D2), np.abs(D, out=D), cols


def float32_enough(sq: tuple[np.ndarray, np.ndarray, np.ndarray], sums: float, m: float,
                   rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
    """Whether float32 measured a chunk as float64 would; if not it is redone in float64.

    ``sq``: the row sums of a^2, b^2, d^2, ``sums`` their total; ``m``: the largest
    |d|; ``rows``: a, b and |d| as rows. Not when a square, a sum or d overflowed; nor when a
    row's sum is so small that squares below float32's normal range could
    weigh in it, unless that row is exactly zero (``any``, on those rows only:
    identical rows of d are common, tiny non-zero ones are not); nor when a
    row's cosine would move by more than it prints (:func:`cosine_safe`).
    """
    if not (math.isfinite(sums) and math.isfinite(m)):
        return False
    lim = rows[0].shape[1] * _TINY32
    for s, X in zip(sq, rows):
        if s.min() < lim and (X is not rows[2] or m > 0.0) and bool(np.any(X[np.flatnonzero(s < lim)])):
            return False
    return cosine_safe(*sq)


def cosine_safe(ra: np.ndarray, rb: np.ndarray, rd: np.ndarray) -> bool:
    """Whether every row's cosine, from float32 partial sums, stays well inside what a report prints.

    ``cos = (aa + bb - dd) / (2 |a| |b|)`` moves by ``K * eps`` for relative
    errors ``eps`` in the three sums, with ``K = (|r - cos| + |1/r - cos|) / 2 +
    dd / (2 |a| |b|)`` and ``r = |a| / |b|``. Near cos 1 with equal norms K is
    tiny (why pv computes the cosine this way), but a row scaled by 1/8 has
    K = 7: its cosine, 1 exactly, would read 0.9999997. With ``_EPS32`` a bound on
    the relative error of the float32 partials, a row must keep ``K * _EPS32``
    below a tenth of the last printed digit: ``_K_NEAR_ONE`` where the cosine
    prints 6 decimals (above 0.999), ``_K_ELSEWHERE`` where it prints 4.
    ``(|aa - bb| + 2 dd) / (2 |a| |b|)`` bounds K from above in a few vector
    operations; only rows it does not clear are looked at closely.
    """
    nab = np.sqrt(ra * rb)
    if bool((np.abs(ra - rb) + 2.0 * rd <= (2.0 * _K_NEAR_ONE) * nab).all()):
        return True
    both = (ra > 0.0) & (rb > 0.0)  # a zero side's cosine is 0 or 1 by rule, exactly
    ra, rb, rd, nab = ra[both], rb[both], rd[both], nab[both]
    cos = 0.5 * (ra + rb - rd) / nab
    r = np.sqrt(ra / rb)
    k = 0.5 * (np.abs(r - cos) + np.abs(1.0 / r - cos)) + 0.5 * rd / nab
    return not bool((k > np.where(cos > 0.999, _K_NEAR_ONE, _K_ELSEWHERE)).any())


def measure(acc: Acc, A: np.ndarray, B: np.ndarray, lo: int, work: Scratch,
            mutable: tuple[bool, bool] = (False, False), rect: Rect | None = None) -> bool:
    """Add one chunk (flat values ``A``/``B`` at element ``lo`` of the view) to the running sums.

    In float32, with no conversion: row sums of a^2 and b^2, d = a - b into one
    reused buffer, its row sums of squares, then |d| in place, read for its sum
    and its maximum; a chunk float32 cannot measure (:func:`float32_enough`)
    is redone in float64. NaN/Inf bookkeeping runs only for a chunk whose sums
    of squares are not finite. Masking and that bookkeeping work on copies,
    except on a side ``mutable`` says the caller no longer needs (a streamed
    comparison's private copies: masked in place, one copy less); the values
    reported next to the largest differences are the inputs' own, positions
    the mask or the non-finite rule leaves out reading 0.

    ``rect``: ``A`` and ``B`` are the chunk's rows cut to their first
    ``rect.cols`` values (``pv.compare.triangle``); such a chunk holding a
    value that is not finite is not measured (False: measure it whole).
    """
    view = acc.view
    n = A.size
    row_lo = lo // view.row_len if view.has_rows else 0
    r = (n // view.row_len if rect is None else A.shape[0]) if view.has_rows else 1
    vals_a, vals_b = A, B
    D = work.d[:n]
    cols = acc.columns if acc.columns is not None and acc.columns.wanted else None
    left_out: np.ndarray | None = None  # masked or not finite: not in the systematic fit's counts
    own = view.causal or A.dtype != work.dtype or B.dtype != work.dtype
    if own:
        if view.causal and A.dtype == B.dtype == work.dtype:  # a side the caller lets go is masked in place
            A, B, D = work.copies(A, B, which=(not mutable[0], not mutable[1]))
        else:
            A, B, D = work.copies(A, B)
        if view.causal:
            left_out = mask(A.reshape(r, -1), B.reshape(r, -1), row_lo, view)
            vals_a, vals_b = A, B
    A2, B2 = A.reshape(r, -1), B.reshape(r, -1)
    ra, rb = row_sumsq(A2), row_sumsq(B2)
    sums = float(ra.sum()) + float(rb.sum())
    if not math.isfinite(sums):
        if rect is not None:
            return False  # nothing added yet; masking in place changed only masked values
        if not own:
            A, B, D = work.copies(A, B)
            A2, B2 = A.reshape(r, -1), B.reshape(r, -1)
        drop = nonfinite(acc, A, B, lo, row_lo).reshape(r, -1)
        left_out = drop if left_out is None else left_out | drop
        vals_a, vals_b = A, B  # excluded positions read as 0 from here on, as in the sums
        ra, rb = row_sumsq(A2), row_sumsq(B2)
        sums = float(ra.sum()) + float(rb.sum())
    rd, T, col = diffs(A2, B2, D, cols is not None)
    m = float(T.max()) if n else 0.0
    sums += float(rd.sum())
    if A.dtype == np.float32 and not float32_enough((ra, rb, rd), sums, m, (A2, B2, T.reshape(r, -1))):
        X, Y, D = work.copies(A, B, np.float64)
        X2, Y2 = X.reshape(r, -1), Y.reshape(r, -1)
        ra, rb = row_sumsq(X2), row_sumsq(Y2)
        rd, T, col = diffs(X2, Y2, D, cols is not None)
        m = float(T.max()) if n else 0.0
    if cols is not None and col is not None:
        counts = np.full(col[0].size, float(r)) if left_out is None else r - left_out.sum(axis=0, dtype=np.float64)
        if rect is not None:  # the columns no row of the chunk sees: nothing summed, nothing counted
            b, bb, d, bd = (np.pad(x, (0, rect.width - rect.cols)) for x in col[:4])
            col, counts = (b, bb, d, bd, col[4], col[5]), np.pad(counts, (0, rect.width - rect.cols))
        cols.add(col, counts)
    if view.has_rows:
        acc.row_aa[row_lo : row_lo + r] += ra
        acc.row_bb[row_lo : row_lo + r] += rb
        acc.row_dd[row_lo : row_lo + r] += rd
    else:
        acc.aa += float(ra[0])
        acc.bb += float(rb[0])
        acc.dd += float(rd[0])
    acc.sum_abs += total(T)
    if m > acc.max_abs:
        i = int(T.argmax())
        acc.max_abs, acc.max_flat = m, lo + (i if rect is None else int(rect.flat(i)))
        acc.max_a, acc.max_b = float(vals_a.flat[i]), float(vals_b.flat[i])
    if acc.top_k and (acc.top_abs.size < acc.top_k or m > acc.top_abs[-1]):
        update_top(acc, T, vals_a, vals_b, lo, rect)
    return True
