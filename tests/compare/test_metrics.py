"""Every metric on hand-computed cases, including NaN, Inf, zero vectors and -0.0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pv.compare.align import View
from pv.compare.metric_table import METRICS, get_metric
from pv.compare.metrics import compare, cosine_from_sums, sqnr_db
from pv.errors import PvError


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def flat(n: int) -> View:
    return View((n,), ("N",))


def test_identical_tensors() -> None:
    a = f32(1, -2, 3.5)
    m = compare(a, a.copy(), flat(3))
    assert m.cosine == 1.0 and m.max_abs == 0.0 and m.rms == 0.0 and m.mean_abs == 0.0
    assert m.rel_err == 0.0 and m.nmse == 0.0 and m.sqnr_db == math.inf
    assert m.top == ()


def test_hand_computed_small_case() -> None:
    a, b = f32(1, 2, 3, 4), f32(1, 2, 3, 5)  # d = [0, 0, 0, -1], b is the reference
    m = compare(a, b, flat(4))
    assert m.count == 4
    assert m.cosine == pytest.approx(34 / math.sqrt(30 * 39), abs=1e-15)
    assert m.max_abs == 1.0 and m.max_index == {"element": 3}
    assert (m.max_a, m.max_b) == (4.0, 5.0)
    assert m.rms == pytest.approx(0.5)
    assert m.mean_abs == pytest.approx(0.25)
    assert m.ref_rms == pytest.approx(math.sqrt(39 / 4))
    assert m.rel_err == pytest.approx(0.5 / math.sqrt(39 / 4))
    assert m.nmse == pytest.approx(1 / 39)
    assert m.sqnr_db == pytest.approx(10 * math.log10(39))
    assert [t["index"] for t in m.top] == [{"element": 3}]


def test_cosine_zero_rules() -> None:
    assert compare(f32(0, 0), f32(0, 0), flat(2)).cosine == 1.0
    assert compare(f32(0, 0), f32(1, 0), flat(2)).cosine == 0.0
    assert compare(f32(1, 0), f32(0, 0), flat(2)).cosine == 0.0
    assert cosine_from_sums(0.0, 0.0, 0.0) == 1.0
    assert cosine_from_sums(4.0, 0.0, 4.0) == 0.0


def test_negative_zero_equals_zero() -> None:
    m = compare(f32(-0.0, -0.0, 1.0), f32(0.0, 0.0, 1.0), flat(3))
    assert m.cosine == 1.0 and m.max_abs == 0.0 and m.sqnr_db == math.inf
    z = compare(f32(-0.0), f32(0.0), flat(1))
    assert z.cosine == 1.0 and z.rel_err == 0.0


def test_opposite_and_orthogonal() -> None:
    assert compare(f32(1, 2), f32(-1, -2), flat(2)).cosine == pytest.approx(-1.0)
    assert compare(f32(1, 0), f32(0, 1), flat(2)).cosine == pytest.approx(0.0, abs=1e-15)


def test_uniform_scale_keeps_cosine_but_not_relative_error() -> None:
    b = f32(1, -2, 3, 0.5)
    m = compare(2 * b, b, flat(4))
    assert m.cosine == 1.0
    assert m.rel_err == pytest.approx(1.0)
    assert m.sqnr_db == pytest.approx(0.0, abs=1e-12)


def test_nan_on_both_sides_agrees_and_is_left_out() -> None:
    m = compare(f32(np.nan, 1, 2), f32(np.nan, 1, 3), flat(3))
    assert (m.nan_a, m.nan_b, m.nan_mismatch) == (1, 1, 0)
    assert m.count == 2
    assert m.max_abs == 1.0 and m.max_index == {"element": 2}
    assert not math.isnan(m.cosine)


def test_nan_on_one_side_is_a_mismatch_with_its_position() -> None:
    m = compare(f32(1, np.nan, 2), f32(1, 5, 2), flat(3))
    assert (m.nan_a, m.nan_b, m.nan_mismatch) == (1, 0, 1)
    assert m.nonfinite_examples[0]["index"] == {"element": 1}
    assert math.isnan(m.nonfinite_examples[0]["a"]) and m.nonfinite_examples[0]["b"] == 5.0
    assert m.count == 2 and m.cosine == 1.0


def test_inf_agreement_and_disagreement() -> None:
    same = compare(f32(np.inf, 1), f32(np.inf, 1), flat(2))
    assert (same.inf_a, same.inf_b, same.inf_mismatch) == (1, 1, 0)
    assert same.count == 1 and same.cosine == 1.0
    sign = compare(f32(np.inf, 1), f32(-np.inf, 1), flat(2))
    assert sign.inf_mismatch == 1
    finite = compare(f32(1e30, 1), f32(np.inf, 1), flat(2))
    assert (finite.inf_a, finite.inf_b, finite.inf_mismatch) == (0, 1, 1)


def test_nan_against_inf_counts_as_nan_mismatch_only() -> None:
    m = compare(f32(np.nan), f32(np.inf), flat(1))
    assert (m.nan_mismatch, m.inf_mismatch) == (1, 0)
    assert m.count == 0 and m.cosine == 1.0


def test_named_index_top_k_and_per_position_cosine() -> None:
    b = np.arange(1, 13, dtype=np.float32).reshape(3, 4)  # [S=3, H=4]
    a = b.copy()
    a[2, 1] += 5.0
    a[0, 3] -= 1.0
    m = compare(a.ravel(), b.ravel(), View((3, 4), ("S", "H")), top_k=3)
    assert m.max_index == {"position": 2, "hidden": 1}
    assert [t["index"] for t in m.top] == [
        {"position": 2, "hidden": 1},
        {"position": 0, "hidden": 3},
    ]
    assert m.positions == (0, 1, 2)
    assert m.position_cosine[1] == 1.0
    row0a, row0b = a[0].astype(float), b[0].astype(float)
    expected = row0a @ row0b / math.sqrt((row0a @ row0a) * (row0b @ row0b))
    assert m.position_cosine[0] == pytest.approx(expected, abs=1e-14)
    assert m.position_rms[2] == pytest.approx(math.sqrt(25 / 4))
    assert m.position_ref_rms[1] == pytest.approx(math.sqrt(float(b[1].astype(float) @ b[1]) / 4))
    assert m.worst_position is not None and m.worst_position[0] == 2


def test_per_head_cosine() -> None:
    b = np.ones((2, 2, 2), dtype=np.float32)  # [S, NH, D]
    a = b.copy()
    a[1, 0] = [1, -1]  # position 1, head 0 orthogonal to [1, 1]
    m = compare(a.ravel(), b.ravel(), View((2, 2, 2), ("S", "NH", "D")))
    assert m.head_cosine == pytest.approx((0.5, 1.0))
    assert m.position_cosine == pytest.approx((1.0, 0.5))
    assert m.max_index == {"position": 1, "head": 0, "dim": 1}


def test_causal_part_only() -> None:
    s = 3
    b = np.tril(np.arange(1, 10, dtype=np.float32).reshape(1, s, s))
    a = b.copy()
    upper = np.triu(np.ones((s, s), bool), 1)[None]
    a[upper] = -np.inf  # masked scores written as -inf by one engine ...
    b[upper] = np.nan  # ... and garbage by the other: neither may count
    m = compare(a.ravel(), b.ravel(), View((1, s, s), ("NH", "S", "S"), causal=True))
    assert m.count == 6 and m.cosine == 1.0 and m.max_abs == 0.0
    assert m.nan_b == 0 and m.inf_a == 0
    a2 = a.copy()
    a2[0, 2, 2] += 1.0  # inside the causal part: counts
    m2 = compare(a2.ravel(), b.ravel(), View((1, s, s), ("NH", "S", "S"), causal=True))
    assert m2.max_abs == 1.0 and m2.max_index == {"head": 0, "query": 2, "key": 2}
    assert m2.positions == (0, 1, 2) and m2.position_rms[2] == pytest.approx(math.sqrt(1 / 3))
    assert m2.position_rms[0] == 0.0


def test_chunking_gives_the_same_answer() -> None:
    rng = np.random.default_rng(0)
    b = rng.standard_normal((6, 2, 50)).astype(np.float32)
    a = (b + 1e-3 * rng.standard_normal(b.shape)).astype(np.float32)
    a[4, 1, 7] = np.nan
    b[1, 0, 3] = np.inf
    a[1, 0, 3] = np.inf
    view = View((6, 2, 50), ("S", "KVH", "D"))
    whole = compare(a.ravel(), b.ravel(), view, chunk=1 << 20)
    for chunk in (7, 100, 333):
        part = compare(a.ravel(), b.ravel(), view, chunk=chunk)
        assert part.count == whole.count
        assert part.cosine == pytest.approx(whole.cosine, abs=1e-15)
        assert part.rms == pytest.approx(whole.rms, rel=1e-12)
        assert part.max_index == whole.max_index
        assert part.top == whole.top
        assert part.position_rms == pytest.approx(whole.position_rms, rel=1e-12)
        assert (part.nan_a, part.nan_mismatch, part.inf_a, part.inf_b) == (1, 1, 1, 1)
    # Read flat in runs of 13 instead of rows of 50, the float32 partial sums round
    # differently (a few 6e-8 units each); added in float64, the cosine moves by
    # ~1e-12, a million times below the 6 decimals reports print.
    flat_view = View((a.size,), ("N",))
    flat_cos = compare(a.ravel(), b.ravel(), flat_view, chunk=13).cosine
    assert flat_cos == pytest.approx(whole.cosine, abs=1e-11)


def test_float64_accumulation_resolves_one_ulp() -> None:
    n = 1 << 20
    b = np.ones(n, dtype=np.float32)
    a = np.full(n, np.nextafter(np.float32(1), np.float32(2)), dtype=np.float32)
    m = compare(a, b, flat(n))
    ulp = float(np.spacing(np.float32(1)))
    assert m.rel_err == pytest.approx(ulp, rel=1e-9)
    assert m.mean_abs == pytest.approx(ulp, rel=1e-9)


def test_sqnr_edges() -> None:
    assert sqnr_db(1.0, 0.0) == math.inf
    assert sqnr_db(0.0, 1.0) == -math.inf
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_metric_registry_lookup() -> None:
    assert get_metric("  SQNR ").name == "sqnr"
    assert set(METRICS) >= {"cosine", "sqnr", "rel_err", "max_abs", "rms", "mean_abs", "nmse"}
    with pytest.raises(PvError, match="valid names: cosine"):
        get_metric("psnr")


def _reference(a: np.ndarray, b: np.ndarray, rows: int) -> dict[str, np.ndarray]:
    """Plain whole-array float64 sums per row, for checking the chunked kernel."""
    a64, b64 = a.astype(np.float64).reshape(rows, -1), b.astype(np.float64).reshape(rows, -1)
    d = a64 - b64
    return {
        "aa": (a64 * a64).sum(axis=1),
        "bb": (b64 * b64).sum(axis=1),
        "dd": (d * d).sum(axis=1),
        "abs": np.abs(d),
    }


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((64, 4096), ("S", "H")),  # rows cut into 512-long pieces (the GIL-free dot)
        ((600, 576), ("S", "H")),  # 256-long pieces plus a tail
        ((3, 20_000), ("S", "V")),  # long rows: 4096-long pieces plus a tail
        ((300_001,), ("N",)),  # flat, odd length
    ],
)
def test_piecewise_sums_match_a_plain_float64_computation(
    shape: tuple[int, ...], layout: tuple[str, ...]
) -> None:
    rng = np.random.default_rng(1)
    n = int(np.prod(shape))
    b = rng.standard_normal(n).astype(np.float32)
    a = (b + 1e-4 * rng.standard_normal(n)).astype(np.float32)
    rows = shape[0] if len(shape) > 1 else 1
    ref = _reference(a, b, rows)
    m = compare(a, b, View(shape, layout), top_k=7, chunk=1 << 18)
    aa, bb, dd = ref["aa"].sum(), ref["bb"].sum(), ref["dd"].sum()
    # float32 partial sums of at most 512 values, added in float64: measured 1e-8
    # relative here (tests/compare/test_precision.py bounds the adversarial cases).
    assert m.cosine == pytest.approx(cosine_from_sums(aa, bb, dd), abs=1e-10)
    assert m.rms == pytest.approx(math.sqrt(dd / n), rel=1e-6)
    assert m.mean_abs == pytest.approx(ref["abs"].sum() / n, rel=1e-6)
    flat_abs = ref["abs"].ravel()
    assert m.max_abs == flat_abs.max()
    i = int(flat_abs.argmax())
    assert (m.max_a, m.max_b) == (float(a[i]), float(b[i]))
    expected_top = np.sort(flat_abs)[::-1][:7]
    assert [t["abs_diff"] for t in m.top] == expected_top.tolist()
    if rows > 1:
        assert m.position_rms == pytest.approx(np.sqrt(ref["dd"] / shape[1]).tolist(), rel=1e-6)
        assert m.position_ref_rms == pytest.approx(
            np.sqrt(ref["bb"] / shape[1]).tolist(), rel=1e-6
        )


def test_top_k_is_found_in_the_first_chunk_and_across_chunks() -> None:
    rng = np.random.default_rng(2)
    n = 50_000
    b = rng.standard_normal(n).astype(np.float32)
    a = b.copy()
    spikes = {10: 3.0, 70: 2.0, 20_000: 5.0, 49_999: 4.0, 64 * 3 + 1: 1.5}
    for i, v in spikes.items():
        a[i] += np.float32(v)
    for chunk in (1 << 18, 4096, 1000):
        m = compare(a, b, flat(n), top_k=4, chunk=chunk)
        assert [t["index"]["element"] for t in m.top] == [20_000, 49_999, 10, 70]
        assert m.max_index == {"element": 20_000}


def test_values_next_to_the_largest_difference_come_from_the_inputs() -> None:
    # A NaN in the same chunk sends it through the slow path: the reported
    # values must still be the finite ones at the position of the max.
    a = f32(np.nan, 1.0, 10.0, 3.0)
    b = f32(np.nan, 1.0, 2.0, 3.0)
    m = compare(a, b, flat(4))
    assert (m.max_a, m.max_b, m.max_index) == (10.0, 2.0, {"element": 2})
    assert m.top[0]["a"] == 10.0 and m.top[0]["b"] == 2.0
