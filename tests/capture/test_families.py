"""Every registered family, engine against the transformers oracle, from every kind of source.

For each family: every stage of a full capture within the float32 tolerance of
the oracle, 32 greedy tokens identical, the same model read back from a
Hugging Face directory and from a GGUF written with the ``gguf`` package, and
``pv bisect --model`` naming the stage of a fault. Gemma 3 270M runs on its
real (Q4_K_M) weights as SmolLM2 does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model import arch
from pv.capture.model.load import load_model
from pv.errors import PvError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pv.capture.engine.runner import Engine
from pv.capture.model.export import write_gguf, write_hf_directory
from pv.capture.oracle.runner import HFOracle
from pv.capture.trace import capture
from pv.cli import run
from pv.compare.diff import diff_paths

FAMILIES = ["qwen2", "llama", "mistral", "qwen3", "qwen3_moe", "mixtral", "gemma3", "granite", "phi3"]
TOKENS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10]
#: "The capital of France is" as Gemma 3's tokenizer cuts it, after <bos>, and a few more words.
GEMMA3_TOKENS = [2, 818, 5279, 529, 7001, 563, 496, 1651, 236764, 1144, 1217, 236761]


def full_diff(model: Any, tokens: list[int], root: Path) -> tuple[Any, Any, Any]:
    a = capture(model, tokens=tokens, output=root / "pv", engine="pv")
    b = capture(model, tokens=tokens, output=root / "hf", engine="hf")
    return a, b, diff_paths(root / "pv", root / "hf")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_within_tolerance_of_the_oracle(family: str, tmp_path: Path) -> None:
    model = load_model(f"synthetic:{family}")
    a, b, report = full_diff(model, TOKENS, tmp_path)
    failed = [(r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"]
    assert not failed
    stages_seen = {r.stage for r in report.records}
    feats = model.config.features
    assert ("q_norm" in stages_seen) == feats["qk_norm"]
    assert ("post_ffn_norm" in stages_seen) == feats["sandwich_norm"]
    assert ("router_logits" in stages_seen) == feats["moe"]
    assert ("ffn_gate" in stages_seen) != feats["moe"]
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=0)
    run_info = a.manifest["run"]
    assert run_info["mask"] == model.config.mask_policy()
    assert run_info["kernels"]["tf32"] is False and run_info["kernels"]["sdpa_backend"]


@pytest.mark.parametrize("family", FAMILIES)
def test_32_greedy_tokens_match_the_oracle(family: str) -> None:
    model = load_model(f"synthetic:{family}")
    assert Engine(model).generate(TOKENS, 32) == HFOracle(model).generate(TOKENS, 32)


def test_windowed_layers_record_their_mask(tmp_path: Path) -> None:
    model = load_model("synthetic:gemma3")
    result = capture(model, tokens=TOKENS, output=tmp_path / "c", stages="attn_softmax")
    masks = {f["layer"]: f["mask"] for f in result.manifest["files"]}
    assert masks == {0: "sliding_window:4", 1: "sliding_window:4", 2: "causal",
                     3: "sliding_window:4", 4: "sliding_window:4", 5: "causal"}
    probs = np.fromfile(tmp_path / "c" / "layer-0" / "attn_softmax.bin", dtype="<f4", offset=12)
    probs = probs.reshape(4, len(TOKENS), len(TOKENS))
    assert probs[:, 10, :7].max() == 0.0 and probs[:, 10, 7:11].min() > 0.0  # keys 7..10 only


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_directory_and_gguf_give_the_same_model(family: str, tmp_path: Path) -> None:
    model = load_model(f"synthetic:{family}")
    write_hf_directory(model.config, dict(model.state_dict), tmp_path / "hf")
    from_hf = load_model(str(tmp_path / "hf"))
    assert from_hf.config == model.config and from_hf.fingerprint == model.fingerprint
    write_gguf(model.config, dict(model.state_dict), tmp_path / "m.gguf")
    from_gguf = load_model(str(tmp_path / "m.gguf"))
    assert from_gguf.config.architecture == model.config.architecture
    expected = Engine(model).forward(TOKENS)
    # GGUF Llama 3 carries llama3 scaling as per-frequency divisors: same frequencies, other rounding.
    torch.testing.assert_close(Engine(from_gguf).forward(TOKENS), expected, atol=1e-4, rtol=0)
    _, _, report = full_diff(from_gguf, TOKENS[:8], tmp_path / "gguf")
    assert all(r.status == "pass" for r in report.records)


def test_mixtral_directory_is_in_the_hub_layout_transformers_reads(tmp_path: Path) -> None:
    """``block_sparse_moe.experts.E.w1/w3/w2``: transformers' own loader fuses them back."""
    transformers = pytest.importorskip("transformers")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    model = load_model("synthetic:mixtral")
    write_hf_directory(model.config, dict(model.state_dict), tmp_path)
    names = set(safetensors_numpy.load_file(str(tmp_path / "model.safetensors")))
    assert {"model.layers.0.block_sparse_moe.gate.weight",
            "model.layers.0.block_sparse_moe.experts.3.w3.weight"} <= names
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32,
                                                           experts_implementation="eager")
    assert type(hf).__name__ == "MixtralForCausalLM"
    with torch.no_grad():
        logits = hf(torch.tensor([TOKENS])).logits[0]
    torch.testing.assert_close(logits, Engine(model).forward(TOKENS), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("family", "fault", "stage"), [
    ("qwen3", "k_norm_q_weight@2", "k_norm"),
    ("gemma3", "post_ffn_norm_skipped@1", "post_ffn_norm"),
    ("qwen3_moe", "moe_topk_smallest@3", "moe_experts"),
    ("mixtral", "moe_weights_not_renormalised@1", "moe_weights"),
    ("mixtral", "moe_topk_smallest@2", "moe_experts"),
    ("mistral", "sliding_window_ignored@2", "attn_softmax"),
    ("granite", "residual_multiplier_dropped@2", "post_attn_residual"),
    ("granite", "attention_multiplier_ignored@1", "attn_scores"),
    ("phi3", "fused_qkv_split_swapped@2", "qkv_matmul"),
    ("phi3", "fused_gate_up_split_swapped@3", "ffn_gate"),
])
def test_bisect_model_names_the_fault_on_every_family(family: str, fault: str, stage: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["bisect", "--model", f"synthetic:{family}", "--tokens", ",".join(map(str, TOKENS)),
                "--inject-fault", fault, "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["summary"]["first_divergence"] == {"layer": int(fault.split("@")[1]), "stage": stage}


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_directory_is_the_model_transformers_reads(family: str, tmp_path: Path) -> None:
    """transformers' own from_pretrained of the directory pv writes (config.json from the one
    ModelConfig mapping, the checkpoint's tensor layout: Phi-3's fused qkv_proj and
    gate_up_proj, Mixtral's hub names) computes the engine's logits."""
    transformers = pytest.importorskip("transformers")
    model = load_model(f"synthetic:{family}")
    write_hf_directory(model.config, dict(model.state_dict), tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), dtype=torch.float32, **({"experts_implementation": "eager"} if model.config.family.moe else {}))
    assert type(hf).__name__ == model.config.family.hf_model_class
    with torch.no_grad():
        logits = hf(torch.tensor([TOKENS])).logits[0]
    torch.testing.assert_close(logits, Engine(model).forward(TOKENS), atol=1e-4, rtol=0)


def test_granite_scalings_round_trip_and_a_gguf_without_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    model = load_model("synthetic:granite")
    cfg = model.config
    assert (cfg.embedding_multiplier, cfg.residual_multiplier, cfg.attention_multiplier,
            cfg.logits_scaling) == (4.0, 0.5, 0.125, 2.0)
    assert cfg.attention_scale == 0.125
    family = arch.FAMILIES["granite"]
    keys = {k: v for k, v in family.gguf_keys.items() if k != "logits_scaling"}
    monkeypatch.setitem(arch.FAMILIES, "granite", replace(family, gguf_keys=keys))
    write_gguf(cfg, dict(model.state_dict), tmp_path / "m.gguf")
    monkeypatch.setitem(arch.FAMILIES, "granite", family)
    with pytest.raises(PvError, match=r"m.gguf: GGUF metadata lacks 'granite.logit_scale'$"):
        load_model(str(tmp_path / "m.gguf"))


def test_phi3_checkpoints_hold_fused_tensors_and_pv_splits_them(tmp_path: Path) -> None:
    """qkv_proj and gate_up_proj on disk (HF) and attn_qkv and a double-width ffn_up (GGUF), one
    tensor per role in pv's state dict; a fused tensor of the wrong size is one line."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    gguf = pytest.importorskip("gguf")
    model = load_model("synthetic:phi3")
    write_hf_directory(model.config, dict(model.state_dict), tmp_path / "hf")
    on_disk = safetensors_numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert on_disk["model.layers.0.self_attn.qkv_proj.weight"].shape == (3 * 64, 64)
    assert on_disk["model.layers.0.mlp.gate_up_proj.weight"].shape == (2 * 160, 64)
    assert not any("q_proj" in n or ".up_proj" in n for n in on_disk)
    assert "model.layers.0.self_attn.k_proj.weight" in model.state_dict
    write_gguf(model.config, dict(model.state_dict), tmp_path / "m.gguf")
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert shapes["blk.0.attn_qkv.weight"] == (64, 3 * 64) and shapes["blk.0.ffn_up.weight"] == (64, 320)
    assert "blk.0.ffn_gate.weight" not in shapes and "blk.0.attn_q.weight" not in shapes
    assert load_model(str(tmp_path / "m.gguf")).fingerprint == model.fingerprint
    sd = dict(on_disk)
    sd["model.layers.1.self_attn.qkv_proj.weight"] = sd["model.layers.1.self_attn.qkv_proj.weight"][:-16]
    safetensors_numpy.save_file(sd, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(PvError, match=r"model.layers.1.self_attn.qkv_proj.weight has 176 rows; "
                                      r"q\|k\|v of this config needs 192$"):
        load_model(str(tmp_path / "hf"))


@pytest.mark.parametrize(("patch", "message"), [
    ({"rope_scaling": {"type": "su", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}},
     "rope scaling 'su' is not supported"),
    ({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}},
     "rope scaling 'longrope' is not supported"),
    ({"partial_rotary_factor": 0.75}, r"partial_rotary_factor 0.75 \(RoPE on part of each head\)"),
    ({"attention_bias": True}, "attention_bias is set, but Phi3ForCausalLM has no q/k/v biases"),
])
def test_phi3_config_the_engine_cannot_run_is_refused_in_one_line(patch: dict[str, Any], message: str,
                                                                  tmp_path: Path) -> None:
    from pv.capture.model.hf_config import to_hf_dict

    data = {**to_hf_dict(load_model("synthetic:phi3").config), **patch}
    (tmp_path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PvError, match=message) as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value)


def test_every_family_is_registered_with_its_transformers_classes() -> None:
    transformers = pytest.importorskip("transformers")
    for family in arch.FAMILIES.values():
        assert hasattr(transformers, family.hf_config_class) and hasattr(transformers, family.hf_model_class)


@pytest.mark.parametrize(("patch", "message"), [
    ({"model_type": "falcon"}, "unsupported architecture 'falcon'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling 'yarn' is not supported"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs factor, low_freq_factor"),
    ({"hidden_act": "relu"}, "activation 'relu' is not supported"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping is not supported"),
])
def test_config_json_the_engine_cannot_run_is_refused(patch: dict[str, Any], message: str,
                                                      tmp_path: Path) -> None:
    from pv.capture.model.hf_config import to_hf_dict

    data = {**to_hf_dict(load_model("synthetic:llama").config), **patch}
    (tmp_path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PvError, match=message):
        load_model(str(tmp_path))


def test_half_precision_oracle_keeps_float32_rope_frequencies() -> None:
    oracle = HFOracle(load_model("synthetic:gemma3"), dtype="bfloat16")
    buffers = {n: b.dtype for n, b in oracle.model.named_buffers() if n.endswith("inv_freq")}
    assert buffers and set(buffers.values()) == {torch.float32}
    assert oracle.model.model.layers[0].input_layernorm.weight.dtype == torch.bfloat16


@pytest.fixture(scope="module")
def gemma3(gemma3_gguf: Path) -> Any:
    return load_model(str(gemma3_gguf))


@pytest.mark.slow
def test_gemma3_real_weights_every_stage_and_32_greedy_tokens(gemma3: Any, tmp_path: Path) -> None:
    cfg = gemma3.config
    assert (cfg.architecture, cfg.num_hidden_layers, cfg.sliding_window) == ("gemma3_text", 18, 512)
    assert cfg.layer_types.count("full_attention") == 3
    _a, _b, report = full_diff(gemma3, GEMMA3_TOKENS, tmp_path)
    assert len(report.records) == 1 + 18 * 20 + 2
    assert all(r.status == "pass" for r in report.records), [
        (r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"]
    assert Engine(gemma3).generate(GEMMA3_TOKENS, 32) == HFOracle(gemma3).generate(GEMMA3_TOKENS, 32)


def half_diff(model: Any, tokens: list[int], dtype: str, root: Path) -> Any:
    capture(model, tokens=tokens, output=root / "pv", engine="pv", dtype=dtype)
    capture(model, tokens=tokens, output=root / "hf", engine="hf", dtype=dtype)
    return diff_paths(root / "pv", root / "hf")


#: Mixtral in bfloat16 is left out here: on the synthetic model the rounding of the router
#: logits moves the routing weights enough that moe_out of layer 3 ends 6.7% off at one
#: position against the shipped bfloat16 tolerance (6%, measured on SmolLM2 and Gemma 3),
#: though its MoE block is bit-identical to transformers' on the same input (test below);
#: judged with tolerances measured on Mixtral itself, it passes (the test after this list).
HALF_PRECISION = [(family, dtype) for family in ("gemma3", "qwen3_moe", "llama")
                  for dtype in ("bfloat16", "float16")] + [("mixtral", "float16")]


def test_mixtral_bfloat16_within_tolerances_measured_on_mixtral(tmp_path: Path) -> None:
    """The documented way for a family the shipped defaults were not measured on: measure the
    oracle's own float32 -> bfloat16 noise on the model (pv tolerances measure) and judge the
    engine's bfloat16 capture with it. Every stage passes, moe_out of layer 3 included."""
    from pv.compare import noise
    from pv.compare.tolerances import load_config

    model = load_model("synthetic:mixtral")
    tol = load_config(noise.write(noise.measure(model, TOKENS, "bfloat16"), tmp_path / "tol.json"))
    capture(model, tokens=TOKENS, output=tmp_path / "pv", engine="pv", dtype="bfloat16")
    capture(model, tokens=TOKENS, output=tmp_path / "hf", engine="hf", dtype="bfloat16")
    report = diff_paths(tmp_path / "pv", tmp_path / "hf", tolerances=tol)
    assert [(r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"] == []
    assert report.ok and len([r for r in report.records if r.compared]) > 50


@pytest.mark.parametrize(("family", "dtype"), HALF_PRECISION)
def test_half_precision_engine_within_the_measured_tolerances(family: str, dtype: str, tmp_path: Path) -> None:
    report = half_diff(load_model(f"synthetic:{family}"), TOKENS, dtype, tmp_path)
    # expert indices (and Mixtral's routing weights) are float32 tensors of a half-precision
    # run: judged in the run's dtype class, the looser one
    assert all(r.dtype == dtype for r in report.records if r.compared)
    assert [(r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"] == []


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
def test_moe_block_is_bit_identical_to_transformers_on_the_same_input(family: str, dtype: str) -> None:
    """Routing weights cast back to the compute dtype (Qwen3-MoE) or kept float32 (Mixtral)."""
    from pv.capture.engine import blocks
    from pv.capture.engine.layers import Points
    from pv.capture.tap import NULL_TAP

    model = load_model(f"synthetic:{family}")
    engine, oracle = Engine(model, dtype=dtype), HFOracle(model, dtype=dtype)
    cfg = model.config
    h = torch.from_numpy(np.random.default_rng(0).standard_normal((len(TOKENS), cfg.hidden_size),
                                                                  dtype=np.float32)).to(engine.dtype)
    for i, layer in enumerate(engine.layers):
        w = layer.weights
        ours = blocks.moe(h, h, w.router, w.experts_gu, w.experts_down, cfg.num_experts_per_tok,
                          cfg.norm_topk_prob, blocks.activation(cfg.hidden_act), i, Points(NULL_TAP, {}),
                          weights_float32=cfg.family.router_weights_float32)
        with torch.no_grad():
            theirs = oracle.model.model.layers[i].mlp(h[None])[0]
        assert torch.equal(ours, theirs), (family, dtype, i)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_half_precision_real_weights(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model = request.getfixturevalue(which)
    tokens = GEMMA3_TOKENS if which == "gemma3" else [1, 504, 3458, 282, 4649, 314, 253, 1345, 28, 1062]
    report = half_diff(model, tokens, "bfloat16", tmp_path)
    assert [(r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"] == []


def test_a_half_precision_bug_still_fails_the_measured_tolerances(tmp_path: Path) -> None:
    model = load_model("synthetic:gemma3")
    capture(model, tokens=TOKENS, output=tmp_path / "pv", engine="pv", dtype="bfloat16",
            fault="post_attn_norm_skipped@1")
    capture(model, tokens=TOKENS, output=tmp_path / "hf", engine="hf", dtype="bfloat16")
    failed = [(r.stage, r.layer) for r in diff_paths(tmp_path / "pv", tmp_path / "hf").records
              if r.status == "fail"]
    assert failed and failed[0] == ("post_attn_norm", 1)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_engine_float32_matches_the_cpu_oracle(family: str, tmp_path: Path) -> None:
    """TF32 is pinned off, so a CUDA float32 capture is within the float32 tolerance of the CPU oracle."""
    model = load_model(f"synthetic:{family}")
    a = capture(model, tokens=TOKENS, output=tmp_path / "pv", engine="pv", device="cuda")
    capture(model, tokens=TOKENS, output=tmp_path / "hf", engine="hf")
    assert [(r.stage, r.layer, r.reasons) for r in diff_paths(tmp_path / "pv", tmp_path / "hf").records
            if r.status != "pass"] == []
    kernels = a.manifest["run"]["kernels"]
    assert kernels["tf32"] is False and kernels["device_name"] != "cpu"
    assert kernels["sdpa_backend"] not in ("unknown", "error")
    assert Engine(model, device="cuda").generate(TOKENS, 32) == HFOracle(model).generate(TOKENS, 32)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("which", ["synthetic:gemma3", "synthetic:qwen3_moe", "smollm2", "gemma3"])
def test_cuda_half_precision_within_the_measured_tolerances(which: str, dtype: str,
                                                            request: pytest.FixtureRequest,
                                                            tmp_path: Path) -> None:
    model = load_model(which) if which.startswith("synthetic") else request.getfixturevalue(which)
    tokens = GEMMA3_TOKENS if which == "gemma3" else TOKENS
    capture(model, tokens=tokens, output=tmp_path / "pv", engine="pv", device="cuda", dtype=dtype)
    capture(model, tokens=tokens, output=tmp_path / "hf", engine="hf", device="cuda", dtype=dtype)
    assert [(r.stage, r.layer, r.reasons) for r in diff_paths(tmp_path / "pv", tmp_path / "hf").records
            if r.status != "pass"] == []


def test_pv_diff_leaves_keys_outside_the_window_out(tmp_path: Path) -> None:
    """Windowed layers compare only the keys their mask lets through; full layers the causal part."""
    model = load_model("synthetic:gemma3")
    _, _, report = full_diff(model, TOKENS, tmp_path)
    s, heads = len(TOKENS), model.config.num_attention_heads
    counts = {r.layer: r.metrics.count for r in report.records if r.stage == "attn_softmax"}
    windowed = heads * sum(min(q + 1, 4) for q in range(s))
    causal = heads * s * (s + 1) // 2
    assert counts == {0: windowed, 1: windowed, 2: causal, 3: windowed, 4: windowed, 5: causal}
    # the fault that ignores the window is still caught, at its layer
    capture(model, tokens=TOKENS, output=tmp_path / "bad", engine="pv", fault="sliding_window_ignored@1")
    bad = diff_paths(tmp_path / "bad", tmp_path / "hf")
    first = next(r for r in bad.records if r.status != "pass")
    assert (first.stage, first.layer) == ("attn_softmax", 1)
