"""The capture engine: agreement with transformers, stage semantics, additivity, layers, dtypes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pv import stages
from pv.capture.disktap import DiskTap
from pv.capture.engine.runner import Engine
from pv.capture.model.config import SYNTHETIC
from pv.capture.model.load import load_model
from pv.capture.model.loaded import LoadedModel, fingerprint
from pv.capture.model.synthetic import synthetic_state_dict
from pv.capture.plan import CapturePlan
from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter
from pv.errors import PvError

torch = pytest.importorskip("torch")

TOKENS = [3, 141, 59, 26, 5, 35, 89, 79, 32, 38, 46, 2, 64, 33, 83, 27]


def llama_tied() -> LoadedModel:
    """A Llama-style variant: tied embeddings, no qkv bias, another GQA ratio."""
    cfg = dataclasses.replace(SYNTHETIC, architecture="llama", tie_word_embeddings=True,
                              attention_bias=False, num_attention_heads=4, num_key_value_heads=1,
                              rope_theta=500000.0, num_hidden_layers=3)
    sd = synthetic_state_dict(cfg, seed=7)
    return LoadedModel(cfg, sd, "llama-test", "synthetic", fingerprint(sd))


@pytest.fixture(scope="module")
def qwen() -> LoadedModel:
    return load_model("synthetic")


def transformers_model(m: LoadedModel):  # type: ignore[no-untyped-def]
    """transformers' own model class on the same weights, with its eager attention."""
    transformers = pytest.importorskip("transformers")
    from pv.capture.oracle.build import HF_CLASSES, hf_config

    config = hf_config(m.config, transformers)
    config._attn_implementation = "eager"
    hf = getattr(transformers, HF_CLASSES[m.config.architecture][1])(config)
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict.items()},
                                             strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    if m.config.tie_word_embeddings:
        hf.tie_weights()
    return hf.eval()


def capture_to(tmp_path: Path, engine: Engine, spec: str = "all", layers: str = "all",
               tokens: list[int] = TOKENS) -> tuple[torch.Tensor, directory.Capture]:
    writer = CaptureWriter(tmp_path, {})
    tap = DiskTap(CapturePlan.parse(spec, layers, engine.config.num_hidden_layers), writer)
    logits = engine.forward(tokens, tap)
    tap.finish()
    assert tap.missing(engine.config.num_hidden_layers) == []
    writer.close()
    return logits, directory.open_capture(tmp_path)


def arrays(cap: directory.Capture) -> dict[tuple[str, int | None], np.ndarray]:
    return {e.key: aprt.read(e.path, e.shape)[1] for e in cap.entries}


@pytest.mark.parametrize("make", [lambda: load_model("synthetic"), llama_tied], ids=["qwen2", "llama-tied"])
def test_matches_transformers_eager(make) -> None:  # type: ignore[no-untyped-def]
    m = make()
    engine = Engine(m)
    hf = transformers_model(m)
    with torch.no_grad():
        ref = hf(torch.tensor([TOKENS])).logits[0]
    ours = engine.forward(TOKENS)
    assert ours.dtype == torch.float32 and ours.shape == (len(TOKENS), m.config.vocab_size)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0)
    expected = hf.generate(torch.tensor([TOKENS]), max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert engine.generate(TOKENS, 8) == expected[0, len(TOKENS):].tolist()


def test_every_stage_has_its_shape(tmp_path: Path, qwen: LoadedModel) -> None:
    _, cap = capture_to(tmp_path, Engine(qwen))
    dims = qwen.config.dims(len(TOKENS))
    keys = [e.key for e in cap.entries]
    assert keys == CapturePlan.parse("all").expected(4, qwen.config.features)
    for e in cap.entries:
        assert e.shape == stages.get(e.stage).shape(dims), e.key
        assert e.layout == stages.get(e.stage).layout
    assert set(cap.not_applicable) == {"q_norm", "k_norm", "post_attn_norm", "post_ffn_norm",
                                       "router_logits", "moe_experts", "moe_weights", "moe_out"}


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


@pytest.mark.parametrize(("spec", "layers"), [("all", "all"), ("attn_scores", "all"), ("attn_softmax", "2"),
                                              ("embedding,lm_head", "all"), ("qkv_bias,ffn_silu", "0,3")])
def test_capture_is_additive(tmp_path: Path, qwen: LoadedModel, spec: str, layers: str) -> None:
    engine = Engine(qwen)
    plain = engine.forward(TOKENS)
    captured, _ = capture_to(tmp_path, engine, spec, layers)
    assert bits(captured) == bits(plain)


def test_stage_semantics(tmp_path: Path, qwen: LoadedModel) -> None:
    _, cap = capture_to(tmp_path, Engine(qwen))
    a = arrays(cap)
    sd, c = qwen.state_dict, qwen.config
    s, d, nh, kvh = len(TOKENS), c.head_dim, c.num_attention_heads, c.num_key_value_heads
    assert np.array_equal(a["embedding", 0], sd["model.embed_tokens.weight"][TOKENS])
    layer, p = 1, "model.layers.1."
    x = a["post_ffn_residual", 0]
    w = np.concatenate([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
    b = np.concatenate([sd[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
    np.testing.assert_allclose(a["qkv_matmul", layer], a["attn_norm", layer] @ w.T, atol=1e-5)
    assert np.array_equal(a["qkv_bias", layer], a["qkv_matmul", layer] + b)  # a true matmul, then +bias
    q, k = a["q_post_rope", layer], a["k_post_rope", layer]
    assert q.shape == (s, nh, d) and k.shape == (s, kvh, d)
    scores = a["attn_scores", layer]
    for h in range(nh):
        expected = q[:, h, :] @ k[:, h // (nh // kvh), :].T / np.sqrt(d)
        np.testing.assert_allclose(scores[h], expected, atol=1e-4)
    probs = a["attn_softmax", layer]
    assert np.all(probs[:, np.triu_indices(s, 1)[0], np.triu_indices(s, 1)[1]] == 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert not np.all(np.triu(scores[0], 1) == 0)  # scores are captured before the mask
    v = a["qkv_bias", layer][:, nh * d + kvh * d:].reshape(s, kvh, d)
    attn = np.concatenate([probs[h] @ v[:, h // (nh // kvh), :] for h in range(nh)], axis=1)
    np.testing.assert_allclose(a["attention", layer], attn, atol=1e-5)
    assert np.array_equal(a["post_attn_residual", layer], x + a["attn_out", layer])
    gate, up = a["ffn_gate", layer], a["ffn_up", layer]
    np.testing.assert_allclose(a["ffn_silu", layer], gate / (1 + np.exp(-gate)), atol=1e-6)
    assert np.array_equal(a["ffn_swiglu", layer], a["ffn_silu", layer] * up)
    assert np.array_equal(a["post_ffn_residual", layer], a["post_attn_residual", layer] + a["ffn_out", layer])
    manifest = {f["path"]: f for f in cap.manifest["files"]}  # type: ignore[index]
    assert manifest["layer-1/attn_softmax.bin"]["provenance"] == "recomputed"
    assert manifest["layer-1/attention.bin"]["provenance"] == "observed"


def test_rope_position_zero_is_identity_and_norms_are_kept(tmp_path: Path, qwen: LoadedModel) -> None:
    _, cap = capture_to(tmp_path, Engine(qwen), "qkv_bias,q_post_rope,k_post_rope", "0")
    a = arrays(cap)
    c = qwen.config
    nq = c.num_attention_heads * c.head_dim
    q_raw = a["qkv_bias", 0][:, :nq].reshape(len(TOKENS), c.num_attention_heads, c.head_dim)
    assert np.array_equal(a["q_post_rope", 0][0], q_raw[0])
    np.testing.assert_allclose(np.linalg.norm(a["q_post_rope", 0], axis=-1), np.linalg.norm(q_raw, axis=-1),
                               rtol=1e-5)


def test_run_layer_reproduces_the_forward(tmp_path: Path, qwen: LoadedModel) -> None:
    engine = Engine(qwen)
    _, cap = capture_to(tmp_path, engine, "embedding,layer_output")
    a = arrays(cap)
    assert np.array_equal(engine.run_layer(0, a["embedding", 0]), a["post_ffn_residual", 0])
    for layer in (1, 2, 3):
        assert np.array_equal(engine.run_layer(layer, a["post_ffn_residual", layer - 1]),
                              a["post_ffn_residual", layer])
    with pytest.raises(PvError, match="out of range"):
        engine.run_layer(4, a["embedding", 0])
    with pytest.raises(PvError, match=r"must be \[S, 64\]"):
        engine.run_layer(0, np.zeros((3, 5), dtype=np.float32))


def test_run_layer_with_a_tap(tmp_path: Path, qwen: LoadedModel) -> None:
    engine = Engine(qwen)
    writer = CaptureWriter(tmp_path, {})
    tap = DiskTap(CapturePlan.parse("attn_norm,ffn_out", "2"), writer)
    engine.run_layer(2, np.ones((5, 64), dtype=np.float32), tap)
    tap.finish()
    assert sorted(tap.fired) == [("attn_norm", 2), ("ffn_out", 2)]
    assert [(f["stage"], f["layer"]) for f in writer.files] == [("attn_norm", 2), ("ffn_out", 2)]
    writer.abort()


def test_causal(qwen: LoadedModel) -> None:
    engine = Engine(qwen)
    short = engine.forward(TOKENS[:6])
    longer = engine.forward(TOKENS[:6] + [200, 201])
    torch.testing.assert_close(longer[:6], short, atol=1e-5, rtol=0)


def test_generate_is_greedy(qwen: LoadedModel) -> None:
    engine = Engine(qwen)
    out = engine.generate(TOKENS[:4], 3)
    ids = TOKENS[:4]
    for tok in out:
        assert tok == int(engine.forward(ids)[-1].argmax())
        ids = ids + [tok]
    assert engine.generate(TOKENS[:4], 0) == []


def test_no_bias_model_records_qkv_bias_not_applicable(tmp_path: Path) -> None:
    engine = Engine(llama_tied())
    _, cap = capture_to(tmp_path, engine, "qkv_matmul,qkv_bias,lm_head")
    assert cap.not_applicable == ("qkv_bias",)
    assert {e.stage for e in cap.entries} == {"qkv_matmul", "lm_head"}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision(tmp_path: Path, qwen: LoadedModel, dtype: str) -> None:
    ref = Engine(qwen).forward(TOKENS)
    engine = Engine(qwen, dtype=dtype)
    plain = engine.forward(TOKENS)
    captured, cap = capture_to(tmp_path, engine)
    assert plain.dtype == torch.float32
    assert bits(plain) == bits(captured)
    cos = torch.nn.functional.cosine_similarity(plain.flatten(), ref.flatten(), dim=0)
    assert cos > 0.99
    assert {f["dtype_captured"] for f in cap.manifest["files"]} == {dtype}  # type: ignore[index]
    # values on disk are exact widenings of the low-precision tensors
    _, emb = aprt.read(cap.by_key()["embedding", 0].path)
    t_dtype = getattr(torch, dtype)
    assert np.array_equal(emb, torch.from_numpy(emb).to(t_dtype).float().numpy())


def test_bad_inputs(qwen: LoadedModel) -> None:
    engine = Engine(qwen)
    with pytest.raises(PvError, match="no tokens"):
        engine.forward([])
    with pytest.raises(PvError, match="token id 256 out of range"):
        engine.forward([1, 256])
    with pytest.raises(PvError, match="unknown dtype"):
        Engine(qwen, dtype="float64")
    with pytest.raises(PvError, match="unknown device"):
        Engine(qwen, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_absent_is_one_clear_error(qwen: LoadedModel) -> None:
    with pytest.raises(PvError, match="no CUDA device is available"):
        Engine(qwen, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_forward_and_capture(tmp_path: Path, qwen: LoadedModel, dtype: str) -> None:
    cpu = Engine(qwen).forward(TOKENS)
    engine = Engine(qwen, device="cuda", dtype=dtype)
    plain = engine.forward(TOKENS)
    captured, cap = capture_to(tmp_path, engine)
    assert bits(plain.cpu()) == bits(captured.cpu())
    cos = torch.nn.functional.cosine_similarity(plain.cpu().flatten(), cpu.flatten(), dim=0)
    assert cos > (0.99999 if dtype == "float32" else 0.99)
    _, logits = aprt.read(cap.by_key()["lm_head", None].path)
    assert np.array_equal(logits, plain.cpu().numpy().reshape(-1))
