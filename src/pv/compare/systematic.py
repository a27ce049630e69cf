"""Systematic deviations: a wrong constant hidden under an engine's rounding noise.

A quantized engine differs from a float32 reference by several percent per
value, so its tolerance class must allow that much (``quantized``: 0.2
relative per position), and a real bug of a few percent (a scale of 1.05, a
bias of 1% of the signal) passes under it. The two differ in kind: rounding
noise has no consistent sign or scale across a stage's channels, a wrong
constant does. Each stage's candidate ``a`` is fitted to its reference ``b``
by least squares over every compared value::

    a = (1 + scale) * b + bias + e

and ``scale`` and ``bias`` (reported as a fraction of a typical channel's RMS
of b) are tested against their standard errors. The errors are not
independent values: a channel carries its error through every position
(SmolLM2's few very large residual channels most of all), and a position's
rounded input moves all its channels alike. So the standard error is the
jackknife over channels (the last axis of the view: hidden units, columns,
keys or vocabulary entries), each left out in turn, and the spread between the
positions' own fits, added in quadrature: what the noise itself would make of
``scale`` and ``bias``.

A finding needs both a large ``z`` (``Z`` standard errors) and a size the
tolerance class names (``Tolerance.scale_error``, ``bias_error``): measured
clean llama.cpp runs do carry small systematic drifts that are real (RMSNorm,
softmax and the SwiGLU/GeGLU products turn zero-mean noise into a bias of its
square: up to 1.5% in scale and 0.5% in bias at 8 channel standard errors on
SmolLM2 and Gemma 3, ``docs/compare.md``), so significance alone would flag
them (with the positions' spread added, 1.4% and none). A head whose cosine
is below the stage's threshold and whose error is ``HEAD_FACTOR`` times the
other heads' (a swapped or wrongly mapped pair of heads) is the third finding.

The sums are filled in the same chunk pass as the other metrics
(``pv.compare.accumulate.measure``), from the first ``SAMPLE`` compared
values of a stage: five float64 vectors of the row length and two sums per
row sampled, whatever the tensor size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Compared values per stage that feed the fit (a stage's first ones; every value of a
#: stage smaller than this). Bounds the cost: four reductions per value read.
SAMPLE = 1 << 20
#: Standard errors a scale or bias must reach to be reported. The errors are only roughly
#: Gaussian: over 2,394 stages of six clean llama.cpp runs (SmolLM2 and Gemma 3, three
#: prompts) the largest z among fits past the size floors was 6.6 (a bias of 1% at one
#: ``attention`` stage, where the error is a fixed vector shared by every position); the
#: planted faults reach 11 and more.
Z = 8.0
#: Reasons this module gives start with this word (``StageRecord.failure`` reads it).
PREFIX = "systematic"
#: How many times the other heads' median 1 - cosine a head's must be to be reported (with
#: its cosine below the stage's threshold). Clean llama.cpp runs: heads below the quantized
#: threshold (0.988 in SmolLM2's ``attention``) at 2.5x; a swapped pair at 2,000x.
HEAD_FACTOR = 10.0
#: Fewer channels than this and the jackknife says nothing: no fit.
_MIN_COLUMNS = 3
#: A channel counts at most as much as one of this many times the median mean square.
_CAP = 10.0
#: Most rows of a chunk whose column sums are taken in float32.
_F32_ROWS = 4096


#: What :func:`column_sums` returns: sum b, b^2, d, b*d down each column, sum b and d along each row.
Sums = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Columns:
    """Per-channel running sums over rows: sum b, sum b^2, sum d, sum b*d (d = a - b), count;
    and sum b, sum d of each row summed (the rows' other sums are the comparison's own)."""

    def __init__(self, n_cols: int):
        self.b = np.zeros(n_cols)
        self.bb = np.zeros(n_cols)
        self.d = np.zeros(n_cols)
        self.bd = np.zeros(n_cols)
        self.n = np.zeros(n_cols)
        self.values = 0
        self.row_b: list[np.ndarray] = []
        self.row_d: list[np.ndarray] = []

    @property
    def wanted(self) -> bool:
        return self.values < SAMPLE

    def add(self, sums: Sums, counts: np.ndarray) -> None:
        for into, part in zip((self.b, self.bb, self.d, self.bd), sums):
            into += part
        self.row_b.append(sums[4])
        self.row_d.append(sums[5])
        self.n += counts
        self.values += int(counts.sum())


def column_sums(B2: np.ndarray, D2: np.ndarray) -> Sums:
    """sum b, b^2, d and b*d down each column of one chunk's rows, and sum b and d along each row
    (masked values are zero on both sides), returned in float64 for the running sums.

    Summed in the chunk's own dtype when it has at most ``_F32_ROWS`` rows: a float32 column
    sum over that many is good to about 1e-6 relative (measured), a thousand times finer than
    the smallest scale or bias the floors report, at a third of the cost of a float64 one.
    Narrower rows (more of them per chunk) are summed in float64.
    """
    f64 = np.float64
    rows = B2.sum(axis=1, dtype=f64), D2.sum(axis=1, dtype=f64)
    if B2.shape[0] > _F32_ROWS:
        return (B2.sum(axis=0, dtype=f64), np.einsum("ij,ij->j", B2, B2, dtype=f64),
                D2.sum(axis=0, dtype=f64), np.einsum("ij,ij->j", B2, D2, dtype=f64), *rows)
    return (B2.sum(axis=0).astype(f64), np.einsum("ij,ij->j", B2, B2).astype(f64),
            D2.sum(axis=0).astype(f64), np.einsum("ij,ij->j", B2, D2).astype(f64), *rows)


@dataclass(frozen=True)
class Systematic:
    """The least-squares fit a = (1 + scale) b + bias, and the jackknife standard errors."""

    scale: float
    scale_se: float
    #: As a fraction of the weighted RMS of b (a typical channel's, see :func:`fit`).
    bias: float
    bias_se: float
    #: Channels left out in turn, positions the spread between positions is taken over (fewer
    #: than 3: none, and the standard errors are infinite), and values fitted.
    columns: int
    positions: int
    values: int

    @property
    def scale_z(self) -> float:
        return _z(self.scale, self.scale_se)

    @property
    def bias_z(self) -> float:
        return _z(self.bias, self.bias_se)


def _z(x: float, se: float) -> float:
    if se > 0.0:
        return x / se
    return 0.0 if x == 0.0 else math.copysign(math.inf, x)


def _solve(bb: np.ndarray, b: np.ndarray, n: np.ndarray, bd: np.ndarray,
           d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale and bias from the normal equations [[bb, b], [b, n]] (scale, bias) = (bd, d), and
    where the system is well posed (b not constant)."""
    det = bb * n - b * b
    ok = det > 1e-12 * np.maximum(bb * n, 1e-300)
    safe = np.where(ok, det, 1.0)
    return (n * bd - b * d) / safe, (bb * d - b * bd) / safe, ok


def fit(cols: Columns | None, rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
        pos: np.ndarray | None = None) -> Systematic | None:
    """The fit over every summed value and its standard errors; None when it says nothing (too
    few channels, a constant or zero reference). ``rows``: the comparison's sums of a^2, b^2, d^2
    and its count per row; ``pos``: each row's position (None: every row its own).

    Least squares weighted per channel: a channel whose mean square is above the median
    channel's counts as if it were at the median (weight 1 / max(mean square, median)). Two
    channels a hundred times larger than the rest (SmolLM2's residual stream) would otherwise
    be the whole fit, and their own consistent rounding error would read as a scale of the
    stage, with a jackknife over two effective channels to vouch for it. The bias is a fraction
    of the weighted RMS of b, the RMS of a typical channel.

    Two standard errors are added in quadrature: the jackknife over channels, and the spread
    between positions of each position's own (unweighted) fit, over the square root of their
    number. The second is what a matmul's rounding of one position's input looks like: one
    error shared by every output channel of that position (a bias of 1% over the channels of
    a single decode step, at 11 channel standard errors), which only another position tells
    apart from a wrong constant.
    """
    if cols is None or cols.n.size < _MIN_COLUMNS or cols.values < _MIN_COLUMNS:
        return None
    ms = cols.bb / np.maximum(cols.n, 1.0)
    seen = ms[cols.n > 0]
    floor = _CAP * float(np.median(seen)) if seen.size else 0.0
    if not floor > 0.0:
        return None
    w = 1.0 / np.maximum(ms, floor)  # a channel above the median energy weighs as a median one
    b, bb, d, bd, n = (w * x for x in (cols.b, cols.bb, cols.d, cols.bd, cols.n))
    tb, tbb, td, tbd, tn = (float(x.sum()) for x in (b, bb, d, bd, n))
    scale, bias, ok = _solve(np.array(tbb), np.array(tb), np.array(tn), np.array(tbd), np.array(td))
    if not bool(ok) or tbb <= 0.0:
        return None
    s_j, c_j, ok_j = _solve(tbb - bb, tb - b, tn - n, tbd - bd, td - d)
    g = int(ok_j.sum())
    if g < _MIN_COLUMNS:
        return None
    s_j, c_j = s_j[ok_j], c_j[ok_j]
    var_s = (g - 1) / g * float(((s_j - s_j.mean()) ** 2).sum())
    var_c = (g - 1) / g * float(((c_j - c_j.mean()) ** 2).sum())
    rms = math.sqrt(tbb / tn)
    var_ps, var_pc, n_pos = _between_positions(cols, rows, pos)
    return Systematic(float(scale), math.sqrt(var_s + var_ps), float(bias) / rms,
                      math.sqrt(var_c + var_pc) / rms, g, n_pos, cols.values)


def _between_positions(cols: Columns, rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
                       pos: np.ndarray | None) -> tuple[float, float, int]:
    """Variance of the mean of the per-position scales and biases (unscaled), and the number of
    positions; infinite variances below three positions."""
    if rows is None or not cols.row_b:
        return math.inf, math.inf, 0
    rb, rd = np.concatenate(cols.row_b), np.concatenate(cols.row_d)
    r = rb.size
    aa, bb, dd, cnt = (x[:r] for x in rows)
    unit = np.arange(r) if pos is None else np.unique(pos[:r], return_inverse=True)[1]
    p_b, p_bb, p_d, p_n = (np.bincount(unit, weights=w) for w in (rb, bb, rd, cnt.astype(np.float64)))
    p_bd = np.bincount(unit, weights=0.5 * (aa - bb - dd))  # sum b*d = (|a|^2 - |b|^2 - |d|^2) / 2
    s_p, c_p, ok = _solve(p_bb, p_b, p_n, p_bd, p_d)
    k = int(ok.sum())
    if k < _MIN_COLUMNS:
        return math.inf, math.inf, k
    return float(np.var(s_p[ok], ddof=1)) / k, float(np.var(c_p[ok], ddof=1)) / k, k


def findings(found: Systematic | None, head_cosine: Sequence[float], *, scale_error: float,
             bias_error: float, cosine: float) -> list[str]:
    """Reasons to fail a stage for a systematic deviation: a scale or bias at least ``Z`` standard
    errors from zero and at least ``scale_error`` / ``bias_error`` in size (0 turns a test off), and,
    when either test is on, heads that stand out among three or more (:func:`odd_heads`, ``cosine``
    the stage's threshold)."""
    out: list[str] = []
    if found is not None:
        if scale_error > 0.0 and abs(found.scale) >= scale_error and abs(found.scale_z) >= Z:
            out.append(f"{PREFIX} scale: A = {1.0 + found.scale:.4f} x B ({found.scale:+.2%} +- "
                       f"{found.scale_se:.2%}, {abs(found.scale_z):.0f} standard errors; reported from "
                       f"{scale_error:.2%} and {Z:g} SE)")
        if bias_error > 0.0 and abs(found.bias) >= bias_error and abs(found.bias_z) >= Z:
            out.append(f"{PREFIX} bias: A = B {'+' if found.bias >= 0 else '-'} {abs(found.bias):.2%} "
                       f"of RMS(B) (+- {found.bias_se:.2%}, {abs(found.bias_z):.0f} standard errors; "
                       f"reported from {bias_error:.2%} and {Z:g} SE)")
    if (scale_error > 0.0 or bias_error > 0.0) and len(head_cosine) > 2:
        low = odd_heads(head_cosine, cosine)
        if low:
            rest = np.delete(np.asarray(head_cosine, dtype=np.float64), [h for h, _ in low])
            others = f"; the other heads' median {float(np.median(rest)):.6f}" if rest.size else ""
            shown = ", ".join(f"{h} ({c:.4f})" for h, c in low[:8]) + (" ..." if len(low) > 8 else "")
            out.append(f"{PREFIX} heads: cosine below {cosine:g} and error {HEAD_FACTOR:g}x the other "
                       f"heads' in head(s) {shown}{others}")
    return out


def odd_heads(head_cosine: Sequence[float], cosine: float) -> list[tuple[int, float]]:
    """Heads whose cosine is below ``cosine`` and whose 1 - cosine is ``HEAD_FACTOR`` times the
    median of the other heads' (a head merely noisier than the stage as a whole, as every head
    of a quantized run's ``attention`` can be, is not one)."""
    err = 1.0 - np.asarray(head_cosine, dtype=np.float64)
    out = []
    for h, c in enumerate(head_cosine):
        if c < cosine and err[h] > HEAD_FACTOR * float(np.median(np.delete(err, h))):
            out.append((h, float(c)))
    return out


def is_systematic(reason: str) -> bool:
    return reason.startswith(PREFIX + " ")
