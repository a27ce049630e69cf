"""The transformers oracle on its own: same numbers as plain transformers, and stages that
obey the equations they name (checked with numpy from the weights, not with pv's engine)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pv import stages as stage_table
from pv.capture.model.config import SYNTHETIC
from pv.capture.model.load import synthetic_model
from pv.capture.model.loaded import LoadedModel, fingerprint
from pv.capture.model.synthetic import synthetic_state_dict
from pv.capture.oracle.build import hf_config
from pv.capture.oracle.hooks import ATTN_IMPLEMENTATION, OBSERVED, RECOMPUTED, provenance
from pv.capture.oracle.runner import HFOracle
from pv.errors import PvError

#: The synthetic model as a Llama with tied embeddings (no bias): the other code paths.
LLAMA = dataclasses.replace(SYNTHETIC, architecture="llama", attention_bias=False,
                            tie_word_embeddings=True, rope_theta=50000.0)
TOKENS = [3, 200, 17, 99, 42, 42, 7, 128, 255, 0, 64, 9, 31, 180, 77, 5, 150, 12]


def llama_model() -> LoadedModel:
    sd = synthetic_state_dict(LLAMA)
    return LoadedModel(LLAMA, sd, "synthetic-llama", "synthetic", fingerprint(sd), None)


class Recorder:
    """A Tap that keeps everything in memory, with the metadata it was given."""

    borrow = False

    def __init__(self, wanted: set[str] | None = None, layers: set[int] | None = None):
        self.wanted, self.layers = wanted, layers
        self.values: dict[tuple[str, int | None], np.ndarray] = {}
        self.meta: dict[tuple[str, int | None], dict[str, Any]] = {}
        self.order: list[tuple[str, int | None]] = []
        self.skipped: dict[str, str] = {}

    def wants(self, stage: str, layer: int | None) -> bool:
        if self.wanted is not None and stage not in self.wanted:
            return False
        return self.layers is None or layer is None or stage_table.BY_NAME[stage].whole_model \
            or layer in self.layers

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        key = (stage, layer)
        assert key not in self.values, f"{key} captured twice"
        self.values[key] = tensor.detach().float().cpu().numpy().copy()
        self.meta[key] = meta
        self.order.append(key)

    def not_applicable(self, stage: str, reason: str) -> None:
        self.skipped[stage] = reason


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def oracle(request: pytest.FixtureRequest) -> HFOracle:
    return HFOracle(synthetic_model() if request.param == "qwen2" else llama_model())


def plain_transformers(model: LoadedModel, attn: str) -> Any:
    """transformers' model class with a stock attention implementation, same weights."""
    cfg = hf_config(model.config)
    cfg._attn_implementation = attn
    cls = getattr(transformers, "LlamaForCausalLM" if model.config.architecture == "llama"
                  else "Qwen2ForCausalLM")
    plain = cls(cfg).eval()
    sd = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict.items()}
    result = plain.load_state_dict(sd, strict=False)
    assert set(result.missing_keys) <= {"lm_head.weight"}
    if model.config.tie_word_embeddings:
        plain.tie_weights()
    return plain


def test_oracle_uses_registered_attention(oracle: HFOracle) -> None:
    assert oracle.model.config._attn_implementation == ATTN_IMPLEMENTATION
    assert ATTN_IMPLEMENTATION in transformers.AttentionInterface._global_mapping


def test_logits_equal_plain_transformers(oracle: HFOracle) -> None:
    ids = torch.tensor([TOKENS])
    with torch.inference_mode():
        eager = plain_transformers(oracle.loaded, "eager")(input_ids=ids, use_cache=False).logits[0]
        sdpa = plain_transformers(oracle.loaded, "sdpa")(input_ids=ids, use_cache=False).logits[0]
    ours = oracle.forward(TOKENS)
    assert torch.equal(ours, eager)
    assert torch.allclose(ours, sdpa, atol=1e-5, rtol=1e-5)


def test_capture_is_additive_and_complete(oracle: HFOracle) -> None:
    tap = Recorder()
    plain = oracle.forward(TOKENS)
    captured = oracle.forward(TOKENS, tap)
    assert torch.equal(plain, captured)
    cfg = oracle.config
    dims = cfg.dims(len(TOKENS))
    expected = []
    for st in stage_table.STAGES:
        if not stage_table.applies(st, cfg.features):
            continue
        if st.name == "embedding":
            expected.append((st.name, 0))
        elif st.whole_model:
            expected.append((st.name, None))
        else:
            expected.extend((st.name, i) for i in range(cfg.num_hidden_layers))
    assert sorted(tap.values, key=lambda k: stage_table.sort_key(*k)) == \
        sorted(expected, key=lambda k: stage_table.sort_key(*k))
    assert tap.order == sorted(tap.order, key=lambda k: stage_table.sort_key(*k)), "not in computation order"
    for (stage, _layer), value in tap.values.items():
        assert value.shape == stage_table.BY_NAME[stage].shape(dims), stage
        assert np.isfinite(value).all(), stage
    assert set(tap.skipped) == {name for name, _ in stage_table.absent(cfg.features)}
    assert ("qkv_bias" in tap.skipped) != cfg.attention_bias


def test_provenance_per_file(oracle: HFOracle) -> None:
    tap = Recorder()
    oracle.forward(TOKENS, tap)
    table = provenance(oracle.config)
    for key, meta in tap.meta.items():
        assert meta["provenance"] == table[key[0]]
        assert meta.get("recomputed", False) == (table[key[0]] == RECOMPUTED)
    recomputed = {k[0] for k, m in tap.meta.items() if m["provenance"] == RECOMPUTED}
    assert recomputed == ({"attn_scores", "qkv_matmul"} if oracle.config.attention_bias
                          else {"attn_scores"})
    assert tap.meta[("attn_softmax", 0)]["provenance"] == OBSERVED


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, theta: float) -> np.ndarray:
    """Rotate-half RoPE on [S, heads, D], positions 0..S-1, in float64."""
    s, _, d = x.shape
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.arange(s)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> bool:
    return bool(np.abs(a - b).max() <= tol * max(1.0, float(np.abs(b).max())))


def test_stages_obey_their_equations(oracle: HFOracle) -> None:
    tap = Recorder()
    logits = oracle.forward(TOKENS, tap).numpy()
    v, cfg, sd = tap.values, oracle.config, oracle.loaded.state_dict
    s, nh, kvh, d = len(TOKENS), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    assert np.array_equal(v[("embedding", 0)], sd["model.embed_tokens.weight"][TOKENS])
    residual = v[("embedding", 0)]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        assert close(v[("attn_norm", i)], rms_norm(residual, sd[p + "input_layernorm.weight"], cfg.rms_norm_eps))
        w = np.concatenate([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        assert close(v[("qkv_matmul", i)], v[("attn_norm", i)] @ w.T)
        qkv = v[("qkv_matmul", i)]
        if cfg.attention_bias:
            b = np.concatenate([sd[p + f"self_attn.{x}_proj.bias"] for x in "qkv"])
            assert close(v[("qkv_bias", i)], qkv + b)
            qkv = v[("qkv_bias", i)]
        q = qkv[:, : nh * d].reshape(s, nh, d)
        k = qkv[:, nh * d: (nh + kvh) * d].reshape(s, kvh, d)
        val = qkv[:, (nh + kvh) * d:].reshape(s, kvh, d)
        assert close(v[("q_post_rope", i)], rope(q, cfg.rope_theta))
        assert close(v[("k_post_rope", i)], rope(k, cfg.rope_theta))
        qh = v[("q_post_rope", i)].transpose(1, 0, 2)
        kh = np.repeat(v[("k_post_rope", i)].transpose(1, 0, 2), nh // kvh, axis=0)
        scores = qh @ kh.transpose(0, 2, 1) / np.sqrt(d)
        assert close(v[("attn_scores", i)], scores)
        future = np.triu(np.ones((s, s), bool), 1)
        masked = np.where(future, -np.inf, scores)
        probs = np.exp(masked - masked.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        assert close(v[("attn_softmax", i)], probs)
        assert np.all(v[("attn_softmax", i)][:, future] == 0.0)
        vh = np.repeat(val.transpose(1, 0, 2), nh // kvh, axis=0)
        attn = (v[("attn_softmax", i)] @ vh).transpose(1, 0, 2).reshape(s, nh * d)
        assert close(v[("attention", i)], attn)
        assert close(v[("attn_out", i)], v[("attention", i)] @ sd[p + "self_attn.o_proj.weight"].T)
        assert close(v[("post_attn_residual", i)], residual + v[("attn_out", i)], 1e-6)
        assert close(v[("ffn_norm", i)], rms_norm(v[("post_attn_residual", i)],
                                                  sd[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps))
        assert close(v[("ffn_gate", i)], v[("ffn_norm", i)] @ sd[p + "mlp.gate_proj.weight"].T)
        assert close(v[("ffn_up", i)], v[("ffn_norm", i)] @ sd[p + "mlp.up_proj.weight"].T)
        assert close(v[("ffn_silu", i)], silu(v[("ffn_gate", i)]))
        assert close(v[("ffn_swiglu", i)], v[("ffn_silu", i)] * v[("ffn_up", i)])
        assert close(v[("ffn_out", i)], v[("ffn_swiglu", i)] @ sd[p + "mlp.down_proj.weight"].T)
        assert close(v[("post_ffn_residual", i)], v[("post_attn_residual", i)] + v[("ffn_out", i)], 1e-6)
        residual = v[("post_ffn_residual", i)]
    assert close(v[("final_norm", None)], rms_norm(residual, sd["model.norm.weight"], cfg.rms_norm_eps))
    head = sd["model.embed_tokens.weight"] if cfg.tie_word_embeddings else sd["lm_head.weight"]
    assert close(v[("lm_head", None)], v[("final_norm", None)] @ head.T)
    assert np.array_equal(v[("lm_head", None)], logits)


def test_plan_selects_stages_and_layers(oracle: HFOracle) -> None:
    tap = Recorder({"attn_scores", "ffn_silu", "lm_head"}, {1, 3})
    oracle.forward(TOKENS, tap)
    assert sorted(tap.values, key=lambda k: stage_table.sort_key(*k)) == [
        ("attn_scores", 1), ("ffn_silu", 1), ("attn_scores", 3), ("ffn_silu", 3), ("lm_head", None)]


def test_hooks_removed_even_when_the_tap_fails(oracle: HFOracle) -> None:
    class Boom(Recorder):
        def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
            if stage == "attn_softmax":
                raise PvError("disk full")
            super().__call__(stage, layer, tensor, **meta)

    with pytest.raises(PvError, match="disk full"):
        oracle.forward(TOKENS, Boom())
    hooked = [n for n, m in oracle.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooked == []
    after = Recorder({"attn_softmax"})
    oracle.forward(TOKENS)  # no tap: nothing recorded anywhere
    oracle.forward(TOKENS, after)
    assert len(after.values) == oracle.config.num_hidden_layers


def test_generate_is_greedy_and_exactly_n_tokens(oracle: HFOracle) -> None:
    prompt = TOKENS[:6]
    out = oracle.generate(prompt, 10)
    assert len(out) == 10
    ids = list(prompt)
    for _ in range(10):
        ids.append(int(oracle.forward(ids)[-1].argmax()))
    assert out == ids[len(prompt):]


def test_bad_tokens_are_one_line_errors(oracle: HFOracle) -> None:
    with pytest.raises(PvError, match="out of range"):
        oracle.forward([1, cfg_vocab(oracle)])
    with pytest.raises(PvError, match="no tokens"):
        oracle.forward([])


def cfg_vocab(oracle: HFOracle) -> int:
    return oracle.config.vocab_size


def test_unknown_architecture_refused() -> None:
    model = synthetic_model()
    odd = dataclasses.replace(model, config=dataclasses.replace(model.config, architecture="gpt2"))
    with pytest.raises(PvError, match="architecture 'gpt2'"):
        HFOracle(odd)


def test_half_precision_runs() -> None:
    logits = HFOracle(synthetic_model(), dtype="bfloat16").forward(TOKENS)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    ref = HFOracle(synthetic_model()).forward(TOKENS)
    assert torch.nn.functional.cosine_similarity(logits.flatten(), ref.flatten(), dim=0) > 0.99


def test_trace_manifest_records_provenance(tmp_path: Path) -> None:
    from pv.capture.trace import capture

    result = capture("synthetic", tokens=TOKENS[:8], stages="qkv_matmul,attn_scores,attn_softmax",
                     layers="0", output=tmp_path / "hf", engine="hf")
    manifest = json.loads((tmp_path / "hf" / "manifest.json").read_text())
    assert manifest["run"]["engine"] == "hf"
    assert manifest["run"]["provenance"] == {
        OBSERVED: ["attn_softmax"], RECOMPUTED: ["qkv_matmul", "attn_scores"]}
    by_stage = {f["stage"]: f["provenance"] for f in manifest["files"]}
    assert by_stage == {"qkv_matmul": RECOMPUTED, "attn_scores": RECOMPUTED, "attn_softmax": OBSERVED}
    assert result.files == 3


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    on_cpu, on_gpu = Recorder(), Recorder()
    cpu = HFOracle(synthetic_model()).forward(TOKENS, on_cpu)
    gpu = HFOracle(synthetic_model(), device="cuda").forward(TOKENS, on_gpu)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
    assert on_gpu.order == on_cpu.order
    for key, value in on_cpu.values.items():
        assert close(on_gpu.values[key], value, 1e-3), key
