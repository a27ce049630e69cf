"""Verdict rule and tolerance sources: dtype defaults, config file, per-stage overrides, flags."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from pv.compare.align import View
from pv.compare.metrics import compare
from pv.compare.tolerances import (
    DEFAULTS,
    Tolerance,
    Tolerances,
    dtype_class,
    judge,
    load_config,
    looser,
)
from pv.errors import PvError

F32 = DEFAULTS["float32"]


def test_dtype_classes_and_ordering() -> None:
    assert dtype_class("torch.float32") == "float32"
    assert dtype_class("BF16") == "bfloat16"
    assert dtype_class("q4_1") == "quantized"
    assert dtype_class("mystery") is None and dtype_class(None) is None
    assert looser("float32", "bfloat16") == "bfloat16"
    assert looser("quantized", "float16") == "quantized"
    assert looser(None, None) is None
    order = list(DEFAULTS.values())
    assert all(x.rtol < y.rtol and x.cosine > y.cosine for x, y in itertools.pairwise(order))


def test_identical_passes_and_uniform_scale_fails_despite_cosine_one() -> None:
    b = np.linspace(-3, 3, 64, dtype=np.float32)
    v = View((4, 16), ("S", "H"))
    assert judge(compare(b, b.copy(), v), F32).ok
    scaled = compare(4 * b, b, v)
    assert scaled.cosine == pytest.approx(1.0, abs=1e-12)
    verdict = judge(scaled, F32)
    assert not verdict.ok and "RMS error" in verdict.reasons[0]


def test_worst_position_decides_not_the_average() -> None:
    rng = np.random.default_rng(1)
    b = rng.standard_normal((64, 32)).astype(np.float32)
    a = b.copy()
    a[63] *= 1.01  # 1% error at one position of 64
    m = compare(a.ravel(), b.ravel(), View((64, 32), ("S", "H")))
    assert m.rel_err < 2e-3  # the whole-tensor error alone would be nearly within rtol ...
    verdict = judge(m, Tolerance(cosine=0.999, rtol=2e-3, atol=0.0))
    assert not verdict.ok and "position 63" in verdict.reasons[0]  # ... the position is not


def test_float_noise_passes_float32_defaults() -> None:
    rng = np.random.default_rng(2)
    b = rng.standard_normal((8, 64)).astype(np.float32)
    a = (b.astype(np.float64) * (1 + 1e-6 * rng.standard_normal(b.shape))).astype(np.float32)
    assert judge(compare(a.ravel(), b.ravel(), View((8, 64), ("S", "H"))), F32).ok


def test_nonfinite_disagreement_fails() -> None:
    m = compare(np.array([np.nan, 1], np.float32), np.array([0, 1], np.float32), View((2,), ("N",)))
    v = judge(m, F32)
    assert not v.ok and "NaN on one side only at 1 positions" in v.reasons


def test_precedence_defaults_config_stage_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "tol.yaml"
    cfg.write_text(
        "rtol: 1e-2\nstages:\n  attn_scores: {rtol: 5.0e-2, cosine: 0.99}\n"
        "dtypes:\n  bf16: {atol: 0.5}\n",
        encoding="utf-8",
    )
    tols = load_config(cfg)
    assert tols.for_stage("ffn_up", "float32") == Tolerance(F32.cosine, 1e-2, F32.atol)
    assert tols.for_stage("attn_scores", "float32") == Tolerance(0.99, 5e-2, F32.atol)
    assert tols.for_stage("ffn_up", "bfloat16").atol == 0.5
    flagged = tols.with_flags(rtol=0.3)
    assert flagged.for_stage("attn_scores", "float32").rtol == 0.3
    assert Tolerances().for_stage("ffn_up", None) == F32  # unknown dtype: float32 unless told


def test_json_config_and_assume_dtype(tmp_path: Path) -> None:
    cfg = tmp_path / "tol.json"
    cfg.write_text('{"assume_dtype": "bf16", "threshold": 0.5}', encoding="utf-8")
    tols = load_config(cfg)
    shipped = Tolerances().for_stage("ffn_up", "bfloat16")  # the measured bf16 default of ffn_up
    assert tols.for_stage("ffn_up", None) == Tolerance(0.5, shipped.rtol, shipped.atol)


@pytest.mark.parametrize(
    "text, message",
    [
        ("rtol: abc\n", "expected a number"),
        ("rtol: -1\n", "non-negative"),
        ("cosine: 2\n", "at most 1.0"),
        ("speed: 1\n", "unknown key 'speed'"),
        ("stages:\n  attn_scorez: {rtol: 1}\n", "unknown stage 'attn_scorez'"),
        ("stages:\n  attn_scores: {rtl: 1}\n", "unknown key 'rtl'"),
        ("dtypes:\n  mystery: {rtol: 1}\n", "unknown dtype"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("rtol: [\n", "invalid YAML"),
        ("", "empty"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "tol.yaml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(PvError, match=message):
        load_config(cfg)


def test_missing_and_bad_json_config(tmp_path: Path) -> None:
    with pytest.raises(PvError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "t.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(PvError, match="invalid JSON"):
        load_config(bad)
    with pytest.raises(PvError, match="non-negative"):
        Tolerances().with_flags(atol=-1.0)


def test_measured_file_sets_per_dtype_per_stage_tolerances(tmp_path: Path) -> None:
    cfg = tmp_path / "tol.json"
    cfg.write_text(json.dumps({
        "measured": [{"model": "m", "dtype": "bfloat16"}],
        "dtypes": {"bfloat16": {"rtol": 0.1, "stages": {"attn_out": {"cosine": 0.99, "rtol": 0.3}}}},
        "stages": {"lm_head": {"atol": 0.5}},
    }), encoding="utf-8")
    tols = load_config(cfg)
    out = tols.for_stage("attn_out", "bfloat16")
    assert (out.cosine, out.rtol) == (0.99, 0.3)
    assert tols.for_stage("attn_norm", "bfloat16").rtol == 0.1  # the dtype line, not the stage's
    assert tols.for_stage("attn_out", "float32").rtol == DEFAULTS["float32"].rtol  # other dtypes untouched
    assert tols.for_stage("lm_head", "bfloat16").atol == 0.5  # a dtype-free stage override still wins
    assert tols.with_flags(rtol=0.01).for_stage("attn_out", "bfloat16").rtol == 0.01  # flags win


def test_bad_per_dtype_stage_block_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "tol.yaml"
    cfg.write_text("dtypes:\n  bf16:\n    stages:\n      attn_outt: {rtol: 1}\n", encoding="utf-8")
    with pytest.raises(PvError, match=r"dtypes\.bf16\.stages: unknown stage 'attn_outt'"):
        load_config(cfg)


def test_shipped_measured_defaults_are_valid_tolerances() -> None:
    from pv import stages
    from pv.compare.measured import MEASURED

    for dtype, per_stage in MEASURED.items():
        assert dtype in DEFAULTS
        for stage, tol in per_stage.items():
            assert stage in stages.BY_NAME
            assert 0.0 < tol["cosine"] <= 1.0 and tol["rtol"] > 0 and tol["atol"] >= 0


def test_pv_tolerances_measure_writes_a_file_pv_diff_reads(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pv.cli import run

    out = tmp_path / "tol.json"
    assert run(["tolerances", "measure", "--model", "synthetic:qwen3", "--dtype", "bfloat16", "-o", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    floor = data["measured"][0]["floor"]
    assert {"q_norm", "k_norm", "attn_softmax", "lm_head"} <= set(floor)
    assert all(0.9 < f["cosine"] <= 1.0 and f["rel"] < 0.5 for f in floor.values())
    tols = load_config(out)
    stage_tol = tols.for_stage("q_norm", "bfloat16")
    measured = data["dtypes"]["bfloat16"]["stages"]["q_norm"]["rtol"]
    assert stage_tol.rtol == measured >= 4 * floor["q_norm"]["rel"] * 0.999
    assert run(["tolerances", "measure", "--model", "synthetic", "--margin", "0.5", "-o", str(out)]) == 2
