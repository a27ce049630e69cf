"""Seeded weights for the built-in ``synthetic`` model (no download, numpy only).

Weights are drawn with numpy's PCG64 so they are the same on every machine and
every torch version. Scales keep activations O(1) through the layers, and the
query/key scale is large enough that attention is far from uniform, so a bug
in the scores or the mask shows up in the numbers.
"""

from __future__ import annotations

import numpy as np

from pv.capture.config import SYNTHETIC, ModelConfig

SEED = 20260501


def synthetic_state_dict(config: ModelConfig = SYNTHETIC, seed: int = SEED) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights for ``config``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    h, i = config.hidden_size, config.intermediate_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim

    def linear(out: int, fan_in: int, gain: float = 1.0) -> np.ndarray:
        weights: np.ndarray = rng.standard_normal((out, fan_in)) * gain / np.sqrt(fan_in)
        return weights.astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    sd: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((config.vocab_size, h)).astype(np.float32)
    }
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        sd[p + "input_layernorm.weight"] = norm(h)
        sd[p + "self_attn.q_proj.weight"] = linear(q_out, h, 2.0)
        sd[p + "self_attn.k_proj.weight"] = linear(kv_out, h, 2.0)
        sd[p + "self_attn.v_proj.weight"] = linear(kv_out, h)
        if config.attention_bias:
            sd[p + "self_attn.q_proj.bias"] = (0.1 * rng.standard_normal(q_out)).astype(np.float32)
            sd[p + "self_attn.k_proj.bias"] = (0.1 * rng.standard_normal(kv_out)).astype(np.float32)
            sd[p + "self_attn.v_proj.bias"] = (0.1 * rng.standard_normal(kv_out)).astype(np.float32)
        sd[p + "self_attn.o_proj.weight"] = linear(h, q_out, 0.5)
        sd[p + "post_attention_layernorm.weight"] = norm(h)
        sd[p + "mlp.gate_proj.weight"] = linear(i, h)
        sd[p + "mlp.up_proj.weight"] = linear(i, h)
        sd[p + "mlp.down_proj.weight"] = linear(h, i, 0.5)
    sd["model.norm.weight"] = norm(h)
    if not config.tie_word_embeddings:
        sd["lm_head.weight"] = linear(config.vocab_size, h)
    return sd
