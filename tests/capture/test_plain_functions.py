"""docs/engines.md, "An engine built of plain functions": its recording code and its mapping,
run as they stand on pv's synthetic Mistral weights, import into a capture that agrees with
pv's own capture of the same model at every stage."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.cli import run
from pv.compare.diff import diff_captures

DOC = Path(__file__).resolve().parents[2] / "docs" / "engines.md"
TOKENS = [5, 9, 33, 120]  # within Mistral's window of 4, which the plain engine does not apply


def _blocks() -> tuple[str, str]:
    text = DOC.read_text()
    section = text.split("### An engine built of plain functions", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    mapping = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert code and mapping, "the section lost its python or yaml block"
    return code.group(1), mapping.group(1)


def _weights() -> tuple[dict[str, Any], dict[str, Any]]:
    from pv.capture.model.synthetic import family_config, synthetic_state_dict

    c = family_config("mistral")
    sd = synthetic_state_dict(c)
    layers = []
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        layers.append({"q": sd[p + "self_attn.q_proj.weight"], "k": sd[p + "self_attn.k_proj.weight"],
                       "v": sd[p + "self_attn.v_proj.weight"], "o": sd[p + "self_attn.o_proj.weight"],
                       "gate": sd[p + "mlp.gate_proj.weight"], "up": sd[p + "mlp.up_proj.weight"],
                       "down": sd[p + "mlp.down_proj.weight"], "attn_norm": sd[p + "input_layernorm.weight"],
                       "ffn_norm": sd[p + "post_attention_layernorm.weight"]})
    weights = {"embed": sd["model.embed_tokens.weight"], "layers": layers, "norm": sd["model.norm.weight"],
               "lm_head": sd["lm_head.weight"]}
    cfg = {"heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
           "theta": c.rope_theta, "eps": c.rms_norm_eps}
    return weights, cfg


def test_documented_plain_function_engine_imports_and_agrees(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from pv.capture.trace import capture

    code, mapping = _blocks()
    weights, cfg = _weights()
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        # the documented example itself, as it stands, is what this test runs (hence exec)
        exec(compile(code, str(DOC), "exec"), {"ids": np.array(TOKENS), "weights": weights, "cfg": cfg})  # noqa: S102
    finally:
        os.chdir(here)
    (tmp_path / "plain.yaml").write_text(mapping)
    assert run(["import", "--mapping", str(tmp_path / "plain.yaml"), "--check"]) == 0
    assert run(["import", str(tmp_path / "dump.npz"), "--mapping", str(tmp_path / "plain.yaml"), "--model",
                "synthetic:mistral", "-o", str(tmp_path / "mine")]) == 0
    capture("synthetic:mistral", tokens=TOKENS, output=tmp_path / "ref")
    report = diff_captures(tmp_path / "mine", tmp_path / "ref")
    assert report.ok, [(r.label, r.reasons) for r in report.records if r.bad][:4]
    compared = {r.stage for r in report.compared}
    assert len(compared) == 19 and not report.hints
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert {f["dtype_captured"] for f in manifest["files"]} == {"float32"}  # kept as the engine computed it
    assert not [n for n in report.notes if "token ids" in n]  # the ids were saved and read
