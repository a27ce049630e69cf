"""The bisect walk, and the fault catalogue: every catalogued bug is found at its own stage and layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pv.compare.bisect import bisect, walk
from pv.compare.records import DiffReport, StageRecord

TOKENS = [3, 17, 101, 42, 250, 7, 64, 199]


def rec(stage: str, layer: int | None, status: str) -> StageRecord:
    return StageRecord(stage, layer, status)


def test_walk_names_first_last_good_and_later_transitions() -> None:
    records = (
        rec("embedding", 0, "pass"),
        rec("attn_norm", 0, "pass"),
        rec("qkv_matmul", 0, "fail"),
        rec("qkv_bias", 0, "only_a"),  # one-sided: no verdict, does not break the run
        rec("q_post_rope", 0, "fail"),
        rec("k_post_rope", 0, "pass"),  # downstream cosines are not monotone
        rec("attn_scores", 0, "error"),
        rec("lm_head", None, "pass"),
    )
    r = walk(DiffReport("a", "b", records))
    assert r.first_divergence == {"layer": 0, "stage": "qkv_matmul"}
    assert r.summary()["last_good"] == {"layer": 0, "stage": "attn_norm"}
    assert [t.to_dict() for t in r.transitions] == [
        {"from": {"layer": 0, "stage": "attn_norm"}, "to": {"layer": 0, "stage": "qkv_matmul"}},
        {"from": {"layer": 0, "stage": "k_post_rope"}, "to": {"layer": 0, "stage": "attn_scores"}},
    ]


def test_walk_whole_model_stages_have_no_layer_and_first_stage_has_no_predecessor() -> None:
    r = walk(DiffReport("a", "b", (rec("embedding", 0, "fail"), rec("lm_head", None, "fail"))))
    assert r.first_divergence == {"layer": None, "stage": "embedding"}
    assert r.last_good is None and len(r.transitions) == 1


def test_walk_clean() -> None:
    r = walk(DiffReport("a", "b", (rec("embedding", 0, "pass"), rec("lm_head", None, "pass"))))
    assert r.first_divergence is None and r.ok and r.transitions == ()


# --------------------------------------------------------------------------- fault catalogue

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def synthetic() -> Any:
    from pv.capture.model.load import load_model

    return load_model("synthetic")


@pytest.fixture(scope="module")
def clean(synthetic: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pv.capture.trace import capture

    out = tmp_path_factory.mktemp("clean") / "cap"
    capture(synthetic, tokens=TOKENS, output=out, engine="pv")
    return out


def _catalogue() -> list[str]:
    """The faults the synthetic (Qwen2-style) model can express; other families' faults are
    bisected in tests/capture/test_families.py."""
    from pv.capture.faults import FAULTS
    from pv.capture.model.config import SYNTHETIC

    features = SYNTHETIC.features
    return [name for name, f in FAULTS.items() if f.requires is None or features.get(f.requires)]


def test_the_catalogue_is_big_enough() -> None:
    from pv.capture.faults import FAULTS

    assert len(FAULTS) >= 8


def test_no_fault_no_divergence(clean: Path) -> None:
    r = bisect(clean, clean)
    assert r.first_divergence is None and r.report.summary()["pairs"] == 71


@pytest.mark.parametrize("name", _catalogue())
def test_every_fault_is_found_at_its_stage_and_layer(
    name: str, synthetic: Any, clean: Path, tmp_path: Path
) -> None:
    from pv.capture.faults import parse_fault
    from pv.capture.trace import capture

    spec = parse_fault(name)
    out = tmp_path / "faulty"
    capture(synthetic, tokens=TOKENS, output=out, engine="pv", fault=spec)
    r = bisect(out, clean)
    assert r.first_divergence == {"layer": spec.layer, "stage": spec.fault.stage}, (
        r.first and r.first.reasons
    )


def test_fault_in_another_layer_and_hf_reference(synthetic: Any, tmp_path: Path) -> None:
    """Against the transformers oracle: clean pv passes, and a fault at layer 3 is placed at layer 3."""
    pytest.importorskip("transformers")
    from pv.capture.trace import capture

    ref = tmp_path / "hf"
    capture(synthetic, tokens=TOKENS, output=ref, engine="hf")
    ok = tmp_path / "pv"
    capture(synthetic, tokens=TOKENS, output=ok, engine="pv")
    assert bisect(ok, ref).first_divergence is None
    bad = tmp_path / "bad"
    capture(synthetic, tokens=TOKENS, output=bad, engine="pv", fault="gqa_head_mapping@3")
    assert bisect(bad, ref).first_divergence == {"layer": 3, "stage": "attn_scores"}


def test_isolate_separates_the_layer_that_introduces_a_bug(
    synthetic: Any, clean: Path, tmp_path: Path
) -> None:
    from pv.capture.engine.runner import Engine
    from pv.capture.store import directory
    from pv.capture.trace import capture
    from pv.compare.isolate import isolate

    bad = tmp_path / "bad"
    capture(synthetic, tokens=TOKENS, output=bad, engine="pv", fault="ffn_norm_attn_weight@1")
    ref = directory.open_capture(clean)
    result = bisect(bad, ref)
    iso = isolate(Engine(synthetic, fault="ffn_norm_attn_weight@1"), ref, cumulative=result.report)
    assert iso.introduced == [1]
    by = {x.layer: x for x in iso.layers}
    assert by[1].first_local is not None and by[1].first_local.stage == "ffn_norm"
    assert by[2].local_ok and by[2].cumulative is not None and by[2].cumulative.status == "fail"
    assert by[0].output is not None and by[0].output.metrics.max_abs == 0.0
    d = iso.to_dict()
    assert d["introduced_in"] == [1] and d["layers"][1]["first_local_divergence"] == "ffn_norm"


def test_isolate_notes_missing_inputs(synthetic: Any, tmp_path: Path) -> None:
    from pv.capture.engine.runner import Engine
    from pv.capture.store import directory
    from pv.capture.trace import capture
    from pv.compare.isolate import isolate

    part = tmp_path / "part"
    capture(synthetic, tokens=TOKENS, output=part, engine="pv", stages="ffn_out")
    iso = isolate(Engine(synthetic), directory.open_capture(part))
    assert all(x.records == () and "not rerun" in x.note for x in iso.layers)
    assert iso.introduced == []


@pytest.mark.slow
def test_smollm2_fault_is_found(
    smollm2_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real weights: pv bisect captures engine and oracle, and names the injected fault's stage."""
    import json

    from pv.cli import run

    png = tmp_path / "smol.png"
    code = run(
        [
            "bisect",
            "--model",
            str(smollm2_gguf),
            "--inject-fault",
            "rope_theta_wrong@7",
            "--prompt",
            "The capital of France is",
            "--format",
            "json",
            "--plot",
            str(png),
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["summary"]["first_divergence"] == {"layer": 7, "stage": "q_post_rope"}
    assert png.stat().st_size > 10_000
    stats = [
        r for r in out["records"] if r["layer"] is not None and r["layer"] < 7 and r["metrics"]
    ]
    assert stats and all(r["status"] == "pass" for r in stats)
