"""Systematic deviations under quantized-level noise: a scale, a bias and a head swap are found,
rounding-like noise over hundreds of stages is not (``pv.compare.systematic``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pv.capture import faults
from pv.compare import systematic
from pv.compare.align import View
from pv.compare.metrics import compare
from pv.compare.tolerances import DEFAULTS, Tolerances, judge, parse_config

QUANTIZED = DEFAULTS["quantized"]


def noisy(rng: np.random.Generator, S: int, H: int, *, noise: float,
          massive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a candidate that differs from it as a quantized engine does: a fixed
    relative error per channel (2%, a quantized weight row), a relative error per value and an
    error per value of the row's RMS (``noise`` each), no consistent sign or scale."""
    b = rng.standard_normal((S, H))
    if massive:  # two channels fifty times the rest, as in SmolLM2's residual stream
        b[:, rng.choice(H, 2, replace=False)] *= 50.0
    rms = np.sqrt((b * b).mean(axis=1, keepdims=True))
    a = (b * (1.0 + 0.02 * rng.standard_normal(H)) + noise * np.abs(b) * rng.standard_normal((S, H))
         + noise * rms * rng.standard_normal((S, H)))
    return a, b


def judged(a: np.ndarray, b: np.ndarray, layout: tuple[str, ...] = ("S", "H")) -> list[str]:
    m = compare(a.astype(np.float32).ravel(), b.astype(np.float32).ravel(), View(a.shape, layout))
    return list(judge(m, QUANTIZED).reasons)


def findings(reasons: list[str]) -> list[str]:
    return [r for r in reasons if systematic.is_systematic(r)]


@pytest.mark.parametrize("noise,massive", [(0.08, False), (0.025, False), (0.08, True), (0.025, True)])
def test_rounding_like_noise_stays_clean_over_many_stages(noise: float, massive: bool) -> None:
    """150 stages per regime (attention-like 8% and residual-like 2.5% noise, with and without two
    massive channels): no systematic finding, although most of them carry a significant-looking
    consistent error in their largest channels."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        S, H = int(rng.integers(4, 41)), int(rng.choice([64, 256, 576, 1024]))
        a, b = noisy(rng, S, H, noise=noise, massive=massive)
        assert findings(judged(a, b)) == [], (S, H)


def test_a_5_percent_scale_under_8_percent_noise_is_found() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        S, H = int(rng.integers(5, 41)), int(rng.choice([576, 1024]))
        a, b = noisy(rng, S, H, noise=0.08)
        reasons = judged(1.05 * a, b)
        assert reasons and all(systematic.is_systematic(r) for r in reasons), reasons  # only this finds it
        assert any(r.startswith("systematic scale: A = 1.0") for r in reasons), reasons


@pytest.mark.parametrize("massive", [False, True])
def test_a_1_percent_bias_on_a_residual_is_found(massive: bool) -> None:
    rng = np.random.default_rng(12)
    for _ in range(40):
        S, H = int(rng.integers(5, 41)), int(rng.choice([576, 1024]))
        a, b = noisy(rng, S, H, noise=0.025, massive=massive)
        reasons = judged(a + 0.01 * np.sqrt((b * b).mean()), b)
        assert [r.split(":")[0] for r in reasons] == ["systematic bias"], reasons


def test_a_swapped_pair_of_heads_is_named() -> None:
    rng = np.random.default_rng(13)
    b = rng.standard_normal((8, 9, 64))
    a = b * (1.0 + 0.03 * rng.standard_normal(b.shape))
    a[:, [0, 1]] = a[:, [1, 0]]
    heads = [r for r in judged(a, b, ("S", "NH", "D")) if r.startswith("systematic heads")]
    assert len(heads) == 1 and "head(s) 0 (" in heads[0] and ", 1 (" in heads[0] and ", 2 (" not in heads[0]


def test_the_fit_is_exact_on_an_exact_line() -> None:
    """a = 1.03 b + 0.2 with no noise: scale 0.03, bias 0.2 / RMS(b), zero standard errors."""
    rng = np.random.default_rng(3)
    b = rng.standard_normal((6, 100))
    m = compare((1.03 * b + 0.2).astype(np.float32).ravel(), b.astype(np.float32).ravel(), View((6, 100), ("S", "H")))
    fit = m.systematic
    assert fit is not None and fit.columns == 100 and fit.values == 600
    assert fit.scale == pytest.approx(0.03, abs=1e-6)
    # every channel's mean square is within 10x the median: the weights are equal, RMS is b's own
    assert fit.bias == pytest.approx(0.2 / math.sqrt(float((b.astype(np.float32) ** 2).mean())), rel=1e-5)
    assert fit.scale_se < 1e-6 and fit.bias_se < 1e-6


def test_chunks_and_masks_do_not_change_the_fit() -> None:
    """The sums are the same whether a stage arrives in one chunk or row by row; in a causal
    attention matrix only the compared (lower) triangle counts."""
    rng = np.random.default_rng(5)
    a, b = noisy(rng, 24, 256, noise=0.05)
    fa, fb = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
    one = compare(fa, fb, View((24, 256), ("S", "H"))).systematic
    many = compare(fa, fb, View((24, 256), ("S", "H")), chunk=256 * 3).systematic
    assert one is not None and many is not None
    for key in ("scale", "scale_se", "bias", "bias_se"):  # float32 column sums: ~1e-6 relative
        assert getattr(many, key) == pytest.approx(getattr(one, key), rel=1e-5, abs=1e-9)
    nh, s = 3, 12
    sb = rng.standard_normal((nh, s, s))
    sa = 1.04 * sb + 0.01 * rng.standard_normal(sb.shape)
    view = View((nh, s, s), ("NH", "S", "S"), causal=True)
    upper = np.triu(np.ones((s, s), bool), 1)
    garbage = sa.copy()
    garbage[:, upper] = 1e3
    fits = [compare(x.astype(np.float32).ravel(), sb.astype(np.float32).ravel(), view, chunk=s * 2).systematic
            for x in (sa, garbage)]
    assert fits[0] is not None and fits[1] is not None
    assert fits[0].values == nh * s * (s + 1) // 2 == fits[1].values
    assert fits[1].scale == pytest.approx(fits[0].scale, rel=1e-9) and fits[0].scale == pytest.approx(0.04, abs=0.01)


def test_the_fit_reads_a_bounded_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systematic, "SAMPLE", 1000)
    rng = np.random.default_rng(9)
    a, b = noisy(rng, 64, 128, noise=0.05)
    m = compare(a.astype(np.float32).ravel(), b.astype(np.float32).ravel(), View((64, 128), ("S", "H")), chunk=8 * 128)
    assert m.systematic is not None and m.systematic.values == 1024  # the chunk that crossed 1000, no more
    assert m.count == 64 * 128


def test_too_little_to_fit_is_no_fit() -> None:
    flat = compare(np.ones(10, np.float32), np.ones(10, np.float32), View((10,), ("N",)))
    assert flat.systematic is None
    two = compare(np.ones(8, np.float32), np.ones(8, np.float32), View((4, 2), ("S", "H")))
    assert two.systematic is None
    zero = compare(np.ones(12, np.float32), np.zeros(12, np.float32), View((3, 4), ("S", "H")))
    assert zero.systematic is None


def test_which_classes_and_stages_test_what() -> None:
    tols = Tolerances()
    q = tols.for_stage("attention", "quantized")
    assert (q.scale_error, q.bias_error) == (0.025, 0.0075)
    assert tols.for_stage("lm_head", "quantized").bias_error == 0.0  # a softmax follows: shifts are free
    assert tols.for_stage("attn_scores", "quantized").scale_error == 0.025
    f32 = tols.for_stage("attention", "float32")
    assert (f32.scale_error, f32.bias_error) == (0.0, 0.0)
    off = parse_config({"dtypes": {"quantized": {"scale_error": 0, "bias_error": 0}}}, "t.yaml")
    assert off.for_stage("attention", "quantized").scale_error == 0.0
    on = parse_config({"stages": {"attention": {"scale_error": 0.01}}}, "t.yaml")
    assert on.for_stage("attention", "float32").scale_error == 0.01
    rng = np.random.default_rng(2)
    a, b = noisy(rng, 8, 576, noise=0.08)
    m = compare((1.05 * a).astype(np.float32).ravel(), b.astype(np.float32).ravel(), View((8, 576), ("S", "H")))
    assert judge(m, off.for_stage("attention", "quantized")).ok  # the test off: under the noise again
    assert not judge(m, QUANTIZED).ok


def test_the_catalogue_plants_what_the_rows_say() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    swapped = faults.BY_NAME["q_heads_swapped"].perturb(x, None)  # type: ignore[misc]
    assert np.array_equal(swapped[:, 0], x[:, 1]) and np.array_equal(swapped[:, 1], x[:, 0])
    assert np.array_equal(swapped[:, 2], x[:, 2]) and x[0, 0, 0] == 0.0  # the input untouched
    r = np.array([[3.0, 4.0], [0.0, 1.0]])
    shifted = faults.BY_NAME["residual_shifted_1pct"].perturb(r, None)  # type: ignore[misc]
    assert np.allclose(shifted - r, 0.01 * math.sqrt(26.0 / 4))  # one constant: 1% of the RMS
    assert np.allclose(faults.BY_NAME["attention_scaled_5pct"].perturb(r, None), 1.05 * r)  # type: ignore[misc]


def test_a_head_must_stand_out_from_the_others() -> None:
    """Every head of a quantized attention output can sit near the threshold (SmolLM2 streamed:
    0.988 against a median of 0.995); only a head ten times worse than the rest is reported."""
    assert systematic.odd_heads([0.9879, 0.9880, 0.9951, 0.9960, 0.9955], 0.99) == []
    assert [h for h, _ in systematic.odd_heads([0.73, 0.73, 0.9999, 0.9998, 0.9999], 0.99)] == [0, 1]
    # four heads, two swapped: each bad head is judged against the median of the other three
    assert [h for h, _ in systematic.odd_heads([0.58, 0.6, 0.9999, 0.9998], 0.99)] == [0, 1]
    assert systematic.odd_heads([0.9, 0.999], 0.99) == [(0, 0.9)]  # two heads: the test needs three
    assert systematic.findings(None, [0.9, 0.999], scale_error=0.025, bias_error=0.0075, cosine=0.99) == []


def test_narrow_rows_are_summed_in_float64() -> None:
    """Four channels, 70,000 rows: a chunk holds 65,536 rows, past the float32 limit of the column
    sums; the exact line is still read exactly."""
    rng = np.random.default_rng(4)
    b = (rng.standard_normal((70_000, 4)) + 3.0).astype(np.float32)
    a = (1.03 * b.astype(np.float64) + 0.2).astype(np.float32)
    fit = compare(a.ravel(), b.ravel(), View((70_000, 4), ("S", "H"))).systematic
    assert fit is not None and fit.values == 280_000
    assert fit.scale == pytest.approx(0.03, abs=1e-6) and fit.scale_se < 1e-6


def test_an_error_shared_by_the_channels_of_a_position_is_noise() -> None:
    """A matmul's rounding of one position's input moves every output channel of that position
    alike: a random offset and scale per position, which the channels alone would call a bias
    and a scale. Over positions they have no consistent sign; with one position (a decode step)
    nothing can tell them from a wrong constant, so nothing is reported."""
    rng = np.random.default_rng(21)
    for _ in range(60):
        S, H = int(rng.integers(4, 17)), int(rng.choice([576, 1536]))
        a, b = noisy(rng, S, H, noise=0.02)
        a = a * (1.0 + 0.02 * rng.standard_normal((S, 1))) + 0.02 * rng.standard_normal((S, 1))
        assert findings(judged(a, b)) == [], (S, H)
    b = rng.standard_normal((1, 1536))
    m = compare((b + 0.02).astype(np.float32).ravel(), b.astype(np.float32).ravel(), View((1, 1536), ("S", "H")))
    assert m.systematic is not None and m.systematic.positions == 1 and math.isinf(m.systematic.bias_se)
    assert findings(list(judge(m, QUANTIZED).reasons)) == []
