"""llama.cpp captured through cb_eval: layouts match pv's, the quantized tolerance class accepts
llama.cpp's rounding and still localises every fault planted inside its graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.llamacpp import LLAMA_FAULTS, halves_from_pairs, parse_llama_fault, split_name
from pv.cli import run
from pv.errors import PvError

PROMPT_IDS = "504,3575,282,4649,314,7042,30,378,3575,282"
CLASSIC = ("embedding,attn_norm,qkv_matmul,qkv_bias,q_post_rope,k_post_rope,attn_scores,attn_softmax,"
           "attention,attn_out,post_attn_residual,ffn_norm,ffn_gate,ffn_up,ffn_silu,ffn_swiglu,ffn_out,"
           "post_ffn_residual,final_norm,lm_head")


def test_pair_order_is_the_gguf_converters_inverse() -> None:
    """halves_from_pairs undoes the Q/K row permutation llama.cpp's converter applies."""
    d, heads = 8, 3
    hf = np.arange(heads * d, dtype=np.float32)
    # The converter's reorder: per head, (half, i) -> (i, half).
    ggml = hf.reshape(heads, 2, d // 2).swapaxes(1, 2).reshape(heads, d)
    assert not np.array_equal(ggml.reshape(-1), hf)
    np.testing.assert_array_equal(halves_from_pairs(ggml).reshape(-1), hf)


def test_names_and_fault_parsing() -> None:
    assert split_name("attn_norm-12") == ("attn_norm", 12)
    assert split_name("result_norm") == ("result_norm", None)
    assert split_name("Kcur-0 (view)") == ("Kcur-0 (view)", None)
    assert str(parse_llama_fault("ffn_up_scaled@3", 30)) == "ffn_up_scaled@3"
    assert parse_llama_fault("attn_norm_scaled").layer == 1
    for bad in ("nope", "ffn_up_scaled@x", "ffn_up_scaled@30"):
        with pytest.raises(PvError):
            parse_llama_fault(bad, 30)


@pytest.fixture(scope="module")
def lc(smollm2_path: Path) -> Path:
    pytest.importorskip("llama_cpp")
    return smollm2_path


@pytest.fixture(scope="module")
def pv_ref(lc: Path, smollm2: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pv's fp32 engine on the dequantised GGUF: the reference for the llama.cpp captures."""
    from pv.capture.trace import capture

    out = tmp_path_factory.mktemp("lcref") / "pv"
    capture(smollm2, tokens=PROMPT_IDS, stages=CLASSIC, layers="0..4", output=out)
    return out


def test_struct_matches_the_bundled_ggml(lc: Path) -> None:
    from llama_cpp import _ggml

    from pv.capture.ggml import Ggml

    g = Ggml(_ggml.libggml)
    g.check_layout()
    assert g.op_name(0) == "NONE"


def test_capture_layouts_and_manifest(lc: Path, smollm2: Any, pv_ref: Path, tmp_path: Path) -> None:
    from pv.capture.trace import capture
    from pv.compare.diff import diff_captures

    out = tmp_path / "lc"
    result = capture(smollm2, engine="llama.cpp", tokens=PROMPT_IDS, stages=CLASSIC,
                     layers="0..4", output=out)
    s = len(PROMPT_IDS.split(","))
    assert result.logits.shape == (s, smollm2.config.vocab_size)  # every position has logits
    man = json.loads((out / "manifest.json").read_text())
    assert man["run"]["engine"] == "llama.cpp"
    assert man["run"]["quantization"] == "Q4_1"
    assert man["run"]["llama_cpp"]["flash_attn"] is False
    assert "ffn_silu" in man["run"]["not_exposed"]
    assert {x["stage"] for x in man["not_applicable"]} >= {"ffn_silu", "qkv_bias"}
    by = {(f["stage"], f["layer"]): f for f in man["files"]}
    assert by[("attn_scores", 0)]["shape"] == [9, s, s]
    assert "softmax scale 0.125" in by[("attn_scores", 0)]["source"]
    report = diff_captures(out, pv_ref)
    assert report.ok, [r.label for r in report.records if r.bad]
    recs = {(r.stage, r.layer): r for r in report.records if r.metrics is not None}
    assert recs[("embedding", 0)].metrics.max_abs == 0.0  # type: ignore[union-attr]
    # Layout conversions are right only if these agree far better than the tolerance asks:
    # a wrong head-dim order or an unscaled kq would drop the cosine well below 0.99.
    for stage in ("qkv_matmul", "q_post_rope", "k_post_rope", "attn_scores", "attn_softmax",
                  "attention"):
        assert recs[(stage, 0)].metrics.cosine > 0.9998, stage  # type: ignore[union-attr]
    assert recs[("lm_head", None)].metrics.cosine > 0.998  # type: ignore[union-attr]
    assert recs[("lm_head", None)].dtype == "quantized"


@pytest.mark.parametrize("name", sorted(LLAMA_FAULTS))
def test_planted_fault_is_localised(lc: Path, pv_ref: Path, tmp_path: Path, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A tensor changed inside llama.cpp's callback is named by pv bisect, stage and layer."""
    from pv.capture.trace import capture
    from pv.compare.bisect import bisect

    out = tmp_path / "faulty"
    capture(str(lc), engine="llama.cpp", tokens=PROMPT_IDS, stages=CLASSIC, layers="0..4",
            output=out, fault=f"{name}@2")
    result = bisect(out, pv_ref)
    assert result.first_divergence == {"layer": 2, "stage": LLAMA_FAULTS[name].stage}
    man = json.loads((out / "manifest.json").read_text())
    assert man["run"]["fault"] == {"name": name, "layer": 2, "stage": LLAMA_FAULTS[name].stage}


def test_cli_bisect_llama_cpp_against_pv(lc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["bisect", "--model", str(lc), "--engine", "llama.cpp", "--reference", "pv",
                "--tokens", PROMPT_IDS, "--inject-fault", "ffn_up_scaled@1", "--format", "json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["first_divergence"] == {"layer": 1, "stage": "ffn_up"}


def test_bad_plans_are_one_line_errors(lc: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--model", "synthetic"], "not a .gguf file"),
        (["--model", str(lc), "--device", "cuda"], "CPU only"),
        (["--model", str(lc), "--dtype", "bfloat16"], "--dtype float32"),
        (["--model", str(lc), "--inject-fault", "nope"], "unknown llama.cpp fault"),
    ]
    for i, (args, message) in enumerate(cases):
        code = run(["trace", "--engine", "llama.cpp", "--tokens", "1,2,3", "--save-tensor", "all",
                    "-o", str(tmp_path / f"o{i}"), *args])
        err = capsys.readouterr().err
        if "cuda" in args and "no CUDA device" in err:
            assert code == 2
            continue
        assert code == 2 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_bisect_against_the_oracle_end_to_end(lc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented run: llama.cpp against the fp32 transformers oracle, every layer."""
    code = run(["bisect", "--model", str(lc), "--engine", "llama.cpp", "--prompt",
                "The capital of France is", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["summary"]
    assert out["summary"]["first_divergence"] is None
    assert out["summary"]["pass"] == 453 and out["summary"]["fail"] == 0
    cosines = [r["metrics"]["cosine"] for r in out["records"] if r["metrics"]]
    assert min(cosines) > 0.995  # measured 0.9959: the quantized class (0.99) has room
