"""The oracle spread with accelerate's device_map captures exactly what the plain oracle does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv.cli import run

pytest.importorskip("torch")
pytest.importorskip("accelerate")

TOKENS = "5,9,33,120,77,3,8,250"
STAGES = "embedding,attn_norm,q_post_rope,attn_scores,attn_softmax,attention,post_ffn_residual,lm_head"
#: Layers 1 and 2 offloaded: their weights stay off the execution device (meta) and
#: accelerate's hooks load them for each forward.
OFFLOAD = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
           "model.layers.1": "disk", "model.layers.2": "disk", "model.layers.3": "cpu",
           "model.norm": "cpu", "lm_head": "cpu"}


def test_offloaded_oracle_equals_plain(tmp_path: Path) -> None:
    from pv.capture.model.load import load_model
    from pv.capture.oracle.runner import HFOracle
    from pv.compare.diff import diff_captures

    model = load_model("synthetic")
    oracle = HFOracle(model, device_map=OFFLOAD, offload_dir=str(tmp_path / "off"))
    assert str(oracle.model.model.layers[1].self_attn.q_proj.weight.device) == "meta"
    plain = HFOracle(model)
    ids = [int(x) for x in TOKENS.split(",")]
    assert oracle.generate(ids, 4) == plain.generate(ids, 4)

    code = run(["trace", "--engine", "hf", "--tokens", TOKENS, "--save-tensor", STAGES,
                "--device-map", json.dumps(OFFLOAD), "--offload-dir", str(tmp_path / "off2"),
                "-o", str(tmp_path / "spread")])
    assert code == 0
    assert run(["trace", "--engine", "hf", "--tokens", TOKENS, "--save-tensor", STAGES,
                "-o", str(tmp_path / "plain")]) == 0
    man = json.loads((tmp_path / "spread" / "manifest.json").read_text())
    assert man["run"]["device_map"]["model.layers.1"] == "disk"
    report = diff_captures(tmp_path / "spread", tmp_path / "plain")
    assert report.ok and report.compared
    for rec in report.compared:
        assert rec.metrics is not None and rec.metrics.max_abs == 0.0, rec.label


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device-map", "{nope"], "not 'auto' and not a JSON object"),
        (["--device-map", "[]"], "non-empty JSON object"),
        (["--device-map", '{"model.layers.9": "cpu"}'], "no module named 'model.layers.9'"),
        (["--device-map", '{"model.layers.1": "disk"}'], "offload directory"),
        (["--engine", "pv", "--device-map", "auto"], "needs --engine hf"),
    ],
)
def test_bad_device_map(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                        message: str) -> None:
    base = ["trace", "--tokens", TOKENS, "--save-tensor", "embedding", "-o", str(tmp_path / "o")]
    if "--engine" not in args:
        base += ["--engine", "hf"]
    code = run(base + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
