"""Faults smaller than llama.cpp's rounding noise, on SmolLM2's real Q4_1 weights: the clean run
stays clean in the quantized class, and a 5% scale, a 1% bias on the residual and a swapped pair
of query heads are each named at their own stage and layer, the first two only by the systematic
tests (``pv.compare.systematic``; the table for both real models: benchmarks/bench_systematic.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pv.compare.bisect import BisectResult, bisect
from pv.compare.tolerances import Tolerances, parse_config

TOKENS = "504,3575,282,4649,314,7042,30,378"
LAYERS = "0..4"
OFF = parse_config({"dtypes": {"quantized": {"scale_error": 0, "bias_error": 0}}}, "off")


@pytest.fixture(scope="module")
def runs(smollm2_gguf: Path, smollm2: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    from pv.capture.trace import capture

    root = tmp_path_factory.mktemp("systematic")
    out = {"ref": root / "ref"}
    capture(smollm2, tokens=TOKENS, layers=LAYERS, output=out["ref"])
    for name in ("clean", "attention_scaled_5pct", "residual_shifted_1pct", "q_heads_swapped"):
        out[name] = root / name
        capture(str(smollm2_gguf), engine="llama.cpp", tokens=TOKENS, layers=LAYERS, output=out[name],
                fault=None if name == "clean" else f"{name}@2")
    return out


def walk(runs: dict[str, Path], name: str, tolerances: Tolerances | None = None) -> BisectResult:
    return bisect(runs[name], runs["ref"], tolerances=tolerances or Tolerances())


def test_the_clean_run_has_no_systematic_finding(runs: dict[str, Path]) -> None:
    result = walk(runs, "clean")
    assert result.first is None and result.report.compared
    assert all(r.metrics is not None and r.metrics.systematic is not None
               for r in result.report.compared if r.stage not in ("embedding", "lm_head", "final_norm"))


@pytest.mark.parametrize("name,stage,reason", [
    ("attention_scaled_5pct", "attention", "systematic scale: A = 1.0"),
    ("residual_shifted_1pct", "post_ffn_residual", "systematic bias: A = B + "),
])
def test_a_fault_under_the_noise_is_named_as_systematic(runs: dict[str, Path], name: str, stage: str,
                                                        reason: str) -> None:
    result = walk(runs, name)
    assert result.first_divergence == {"layer": 2, "stage": stage}
    assert result.first is not None and result.first.failure == "systematic"
    assert result.first.reasons[0].startswith(reason), result.first.reasons
    assert walk(runs, name, OFF).first is None  # the per-position rule alone passes it


def test_a_swapped_pair_of_heads_is_named_by_head(runs: dict[str, Path]) -> None:
    result = walk(runs, "q_heads_swapped")
    assert result.first_divergence == {"layer": 2, "stage": "q_post_rope"}
    assert result.first is not None
    heads = [r for r in result.first.reasons if r.startswith("systematic heads")]
    assert len(heads) == 1 and "head(s) 0 (" in heads[0] and ", 1 (" in heads[0] and ", 2 (" not in heads[0]


@pytest.mark.parametrize("fault,first", [(None, None), ("attention_scaled_5pct@7", {"layer": 7, "stage": "attention"})])
def test_bisect_while_both_run_sees_the_same(smollm2_gguf: Path, fault: str | None, first: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Compared while llama.cpp and pv's engine run (all 30 layers, ``attention`` read per head
    there, where every head of a clean run can sit below 0.99): clean stays clean, and the scale
    is named where it is planted."""
    import json

    pytest.importorskip("llama_cpp")
    from pv.cli import run

    args = ["bisect", "--model", str(smollm2_gguf), "--engine", "llama.cpp", "--reference", "pv",
            "--tokens", TOKENS, "--format", "json"] + (["--inject-fault", fault] if fault else [])
    code = run(args)
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (code, summary["first_divergence"]) == ((0, None) if fault is None else (1, first))
