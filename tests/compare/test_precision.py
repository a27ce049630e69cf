"""The float32 kernel against a plain float64 reference, on inputs chosen to break float32.

``pv.compare.accumulate`` sums float32 values in float32 within runs of at most
512 values, adds the runs in float64, and redoes in float64 a chunk whose
squares float32 cannot hold or whose cosines it would move visibly. Here every
metric is recomputed the obvious way (whole arrays converted to float64, numpy
sums) and the two must agree well inside what a report prints: a cosine
printed to 6 decimals (above 0.999) within 5e-8, and within
EPS32 * sqrt(2 (1 - cos)) of the reference (what keeps the heatmap's cosine
nines); one printed to 4 decimals within 5e-6; relative quantities (RMS,
relative error, NMSE, mean and max |d|, per position) printed to 3 significant
digits within 1e-6 relative; SQNR within 1e-5 dB; counts, indices and the
verdict exactly. The inputs are adversarial: a float32 running sum of the
same squares overflows, underflows or drifts past the bounds, and the last
test shows the checks failing once the float64 redo is switched off.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pv.compare.align import View
from pv.compare.metrics import Metrics, compare
from pv.compare.tolerances import Tolerances, judge

# Cosines print 6 decimals above 0.999 (a change shows at 5e-7), 4 below (at 5e-5):
# a tenth of that is allowed. Near 1 the error must also be small against 1 - cos
# (the heatmap's "cosine nines"): at most EPS32 * sqrt(2 (1 - cos)), the bound for
# relative errors EPS32 in the sums of squares when the norms are close.
COS_NEAR_ONE_ABS = 5e-8
COS_ABS = 5e-6
EPS32 = 2.5e-7
REL = 1e-6  # relative errors printed to 3 significant digits move at 5e-4
EPS = 1e-30  # the documented guard of divisions by the reference's norm
SQNR_DB = 1e-5


def reference(a: np.ndarray, b: np.ndarray, view: View) -> dict[str, Any]:
    """Every metric from whole float64 arrays: mask, exclude non-finite, sum, divide (EPS-guarded)."""
    a64 = a.astype(np.float64).reshape(view.shape)
    b64 = b.astype(np.float64).reshape(view.shape)
    keep = np.ones(view.shape, bool)
    if view.causal:
        q = np.arange(view.shape[-2])[:, None] + (view.shape[-1] - view.shape[-2])
        keep &= np.arange(view.shape[-1])[None, :] <= q
    finite = np.isfinite(a64) & np.isfinite(b64)
    use = keep & finite
    a0, b0 = np.where(use, a64, 0.0), np.where(use, b64, 0.0)
    d = a0 - b0
    out: dict[str, Any] = {
        "count": int(use.sum()),
        "nan_a": int(np.isnan(a64).sum()),
        "nan_b": int(np.isnan(b64).sum()),
        "inf_a": int(np.isinf(a64).sum()),
        "inf_b": int(np.isinf(b64).sum()),
        "nan_mismatch": int((np.isnan(a64) ^ np.isnan(b64)).sum()),
        "inf_mismatch": int(((np.isinf(a64) | np.isinf(b64)) & ~(np.isnan(a64) | np.isnan(b64)) & (a64 != b64)).sum()),
        "max_abs": float(np.abs(d).max()),
        "max_flat": int(np.abs(d).ravel().argmax()),
    }
    aa, bb, dd = (float((x * x).sum()) for x in (a0, b0, d))
    out.update(cosine=_cos(aa, bb, dd), rms=math.sqrt(dd / out["count"]), ref_rms=math.sqrt(bb / out["count"]),
               mean_abs=float(np.abs(d).sum()) / out["count"], nmse=dd / max(bb, EPS) if dd else 0.0,
               sqnr_db=10 * math.log10(bb / dd) if dd else math.inf)
    out["rel_err"] = out["rms"] / max(out["ref_rms"], EPS) if out["rms"] else 0.0  # guarded as documented
    if view.has_rows:  # per position: the position axis is the first "S" of the layout
        axes = tuple(i for i, name in enumerate(view.layout) if i != view.layout.index("S"))
        p = [(x * x).sum(axis=axes) for x in (a0, b0, d)]
        n = use.sum(axis=axes)
        out["position_cosine"] = [_cos(*s) for s in zip(*p)]
        out["position_rms"] = np.sqrt(p[2] / n).tolist()
        out["position_ref_rms"] = np.sqrt(p[1] / n).tolist()
    return out


def _cos(aa: float, bb: float, dd: float) -> float:
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    return min(1.0, max(-1.0, 0.5 * (aa + bb - dd) / math.sqrt(aa * bb)))


def assert_close(m: Metrics, ref: dict[str, Any]) -> None:
    for key in ("count", "nan_a", "nan_b", "inf_a", "inf_b", "nan_mismatch", "inf_mismatch"):
        assert getattr(m, key) == ref[key], key
    assert m.max_abs == pytest.approx(ref["max_abs"], rel=REL)
    _cos_close(m.cosine, ref["cosine"])
    for key in ("rms", "ref_rms", "rel_err", "mean_abs", "nmse"):
        assert getattr(m, key) == pytest.approx(ref[key], rel=REL, abs=0.0), key
    if math.isinf(ref["sqnr_db"]):
        assert m.sqnr_db == ref["sqnr_db"]
    else:
        assert m.sqnr_db == pytest.approx(ref["sqnr_db"], abs=SQNR_DB)
    if "position_rms" in ref:
        assert m.position_rms == pytest.approx(ref["position_rms"], rel=REL, abs=0.0)
        assert m.position_ref_rms == pytest.approx(ref["position_ref_rms"], rel=REL, abs=0.0)
        for got, want in zip(m.position_cosine, ref["position_cosine"], strict=True):
            _cos_close(got, want)
    default = Tolerances().for_stage("attn_out", "float32")
    assert judge(m, default).ok == _ref_ok(ref, default)


def _cos_close(got: float, want: float) -> None:
    if want <= 0.999:
        assert abs(got - want) <= COS_ABS, (got, want)
        return
    gap = 1.0 - want
    # 1e-13: a tenth of the smallest 1 - cos the heatmap resolves (it stops at 12 nines);
    # float64 itself moves a scaled tensor's cosine by ~1e-14
    assert abs(got - want) <= min(COS_NEAR_ONE_ABS, EPS32 * math.sqrt(2 * gap) + 1e-13), (1 - got, gap)


def _ref_ok(ref: dict[str, Any], tol: Any) -> bool:
    if ref["nan_mismatch"] or ref["inf_mismatch"] or ref["cosine"] < tol.cosine:
        return False
    pairs = zip(ref.get("position_rms", [ref["rms"]]), ref.get("position_ref_rms", [ref["ref_rms"]]))
    return all(d <= tol.atol + tol.rtol * r for d, r in pairs)


def _f32_sumsq(x: np.ndarray) -> float:
    """A naive float32 sum of squares (sequential, float32 all the way): what the kernel must beat."""
    x32 = x.astype(np.float32)
    with np.errstate(over="ignore"):
        return float(np.cumsum(x32 * x32, dtype=np.float32)[-1])


def _near(b: np.ndarray, rng: np.random.Generator, ulps: int = 1, frac: float = 0.5) -> np.ndarray:
    """``b`` with a random ``frac`` of its values moved by ``ulps`` units in the last place."""
    a = b.copy()
    pick = rng.random(b.shape) < frac
    for _ in range(ulps):
        a = np.where(pick, np.nextafter(a, np.float32(np.inf)), a)
    return a.astype(np.float32)


def _spanning(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    mag = 10.0 ** rng.uniform(lo, hi, n)
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float32)


CHUNKS = (1 << 18, 1000)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_values_spanning_1e_minus_30_to_1e30(chunk: int) -> None:
    rng = np.random.default_rng(11)
    b = _spanning(rng, 200_000, -30, 30)
    a = (b * (1 + 1e-3 * rng.standard_normal(b.size))).astype(np.float32)
    assert math.isinf(_f32_sumsq(b))  # float32 squares of 1e30 overflow
    view = View((400, 500), ("S", "H"))
    assert_close(compare(a, b, view, chunk=chunk), reference(a, b, view))


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(("lo", "hi"), [(-30, -22), (-24, -19), (15, 19.5), (0, 0.5)])
def test_one_ulp_apart_at_every_scale(chunk: int, lo: float, hi: float) -> None:
    rng = np.random.default_rng(12)
    b = _spanning(rng, 300_000, lo, hi)
    a = _near(b, rng)
    view = View((300, 1000), ("S", "H"))
    m, ref = compare(a, b, view, chunk=chunk), reference(a, b, view)
    assert_close(m, ref)
    assert 0 < ref["rel_err"] < 1e-6 and m.rel_err > 0
    if hi < -19:  # squares (and d^2) under float32's normal range: a float32 sum loses them
        d = a.astype(np.float64) - b
        assert abs(_f32_sumsq(d) - float((d * d).sum())) > REL * float((d * d).sum())


def test_tiny_rows_beside_ordinary_and_identical_rows() -> None:
    rng = np.random.default_rng(13)
    b = rng.standard_normal((64, 4096)).astype(np.float32)
    b[5] *= np.float32(1e-25)  # a row whose squares underflow float32
    b[9] = 0.0  # an exactly zero row
    a = _near(b, rng, ulps=3)
    a[20:40] = b[20:40]  # identical rows: d exactly zero there
    view = View(b.shape, ("S", "H"))
    m, ref = compare(a.ravel(), b.ravel(), view), reference(a.ravel(), b.ravel(), view)
    assert_close(m, ref)
    assert m.position_rms[20] == 0.0 and m.position_ref_rms[9] == 0.0 and m.position_rms[5] > 0.0


@pytest.mark.parametrize("where", ["nan_a", "inf_both", "inf_b_only", "huge_finite"])
def test_a_single_non_finite_or_huge_value(where: str) -> None:
    rng = np.random.default_rng(14)
    b = rng.standard_normal(100_000).astype(np.float32)
    a = (b + 1e-5 * rng.standard_normal(b.size)).astype(np.float32)
    i = 54_321
    if where == "nan_a":
        a[i] = np.nan
    elif where == "inf_both":
        a[i] = b[i] = np.inf
    elif where == "inf_b_only":
        b[i] = -np.inf
    else:  # finite, but its square overflows float32
        a[i], b[i] = np.float32(3e38), np.float32(-3e38)
    view = View((100, 1000), ("S", "H"))
    m, ref = compare(a, b, view), reference(a, b, view)
    assert_close(m, ref)
    if where == "huge_finite":
        assert m.max_index == {"position": 54, "hidden": 321} and m.max_abs == pytest.approx(6e38, rel=1e-6)
    else:
        assert m.count == b.size - 1


def test_huge_tensor_accumulates_without_drift() -> None:
    """16M values near cosine 1: a float32 total over them would drift by far more than the bound."""
    rng = np.random.default_rng(15)
    n = 1 << 24
    b = (1 + rng.random(n, dtype=np.float32)).astype(np.float32)
    a = (b + np.float32(1e-4) * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    view = View((n,), ("N",))
    m, ref = compare(a, b, view), reference(a, b, view)
    assert_close(m, ref)
    bb = float((b.astype(np.float64) ** 2).sum())
    assert abs(_f32_sumsq(b) - bb) > 1e3 * REL * bb  # what a float32 running sum would report


def test_long_sequence_attention_scores_causal() -> None:
    rng = np.random.default_rng(16)
    heads, s = 4, 512
    b = rng.standard_normal((heads, s, s)).astype(np.float32) * np.float32(8)
    a = _near(b, rng, ulps=2)
    a[2, 300:] += np.float32(1e-3) * rng.standard_normal((s - 300, s)).astype(np.float32)
    view = View((heads, s, s), ("NH", "S", "S"), causal=True)
    m = compare(a.ravel(), b.ravel(), view, chunk=1 << 16)
    ref = reference(a.ravel(), b.ravel(), view)
    assert_close(m, ref)
    heads_ref = []
    for h in range(heads):
        keep = np.tril(np.ones((s, s), bool))
        x, y = a[h].astype(np.float64)[keep], b[h].astype(np.float64)[keep]
        heads_ref.append(_cos(float(x @ x), float(y @ y), float((x - y) @ (x - y))))
    for got, want in zip(m.head_cosine, heads_ref, strict=True):
        _cos_close(got, want)


@pytest.mark.parametrize("case", ["opposite", "orthogonal", "scaled"])
def test_cosines_far_from_one(case: str) -> None:
    rng = np.random.default_rng(17)
    b = rng.standard_normal(300_000).astype(np.float32)
    other = rng.standard_normal(b.size).astype(np.float32)
    a = {"opposite": -b + np.float32(1e-3) * other, "orthogonal": other, "scaled": np.float32(1 / 8) * b}[case]
    view = View((300, 1000), ("S", "H"))
    assert_close(compare(a.astype(np.float32), b, view), reference(a.astype(np.float32), b, view))


@pytest.mark.parametrize("case", ["spanning", "tiny", "scaled"])
def test_the_bounds_catch_float32_without_its_float64_redo(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same checks fail when every chunk is trusted to float32: the cases above can fail."""
    from pv.compare import accumulate

    rng = np.random.default_rng(18)
    b = {"spanning": _spanning(rng, 100_000, -30, 30), "tiny": _spanning(rng, 100_000, -30, -22),
         "scaled": rng.standard_normal(100_000).astype(np.float32)}[case]
    a = np.float32(1 / 64) * b if case == "scaled" else _near(b, rng)
    view = View((100, 1000), ("S", "H"))
    ref = reference(a, b, view)
    assert_close(compare(a, b, view), ref)
    monkeypatch.setattr(accumulate, "float32_enough", lambda *args: True)
    with pytest.raises(AssertionError):
        assert_close(compare(a, b, view), ref)
