"""Seeded weights for the built-in ``synthetic`` model (no download, numpy only).

Weights are drawn with numpy's PCG64 so they are the same on every machine and
every torch version. Scales keep activations O(1) through the layers, and the
query/key scale is large enough that attention is far from uniform, so a bug
in the scores or the mask shows up in the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pv.capture.model.config import SYNTHETIC, ModelConfig
from pv.errors import PvError

SEED = 20260501

#: The small shape every ``synthetic:FAMILY`` starts from; each family's row
#: (``Family.synthetic``) changes what its family needs changed, so that a prompt of a
#: dozen tokens exercises its windows, layer patterns and scalings.
_BASE: dict[str, Any] = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 10000.0,
         "rms_norm_eps": 1e-6, "max_position_embeddings": 512}


def family_config(name: str) -> ModelConfig:
    """The small config of ``synthetic:FAMILY`` (family names or ``model_type`` aliases)."""
    from pv.capture.model import arch

    try:
        family = arch.get(name)
    except PvError:
        raise PvError(f"unknown synthetic family '{name}'; choose one of {arch.names()}") from None
    return ModelConfig(architecture=family.name, **{**_BASE, **family.synthetic})


def synthetic_state_dict(config: ModelConfig = SYNTHETIC, seed: int = SEED) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights for ``config`` (any registered family)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    family = config.family
    roles = family.roles(config.attention_bias)

    def linear(out: int, fan_in: int, gain: float = 1.0) -> np.ndarray:
        weights: np.ndarray = rng.standard_normal((out, fan_in)) * gain / np.sqrt(fan_in)
        return weights.astype(np.float32)

    def norm(n: int) -> np.ndarray:
        # Gemma's weights are offsets from 1: its norms multiply by (1 + w).
        centre = 0.0 if family.norm_offset else 1.0
        return (centre + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def experts(e: int, out: int, fan_in: int, gain: float = 1.0) -> np.ndarray:
        return np.stack([linear(out, fan_in, gain) for _ in range(e)])

    e, mi = config.num_experts, config.moe_intermediate_size
    # Draw order is fixed per role; the roles of the original Qwen2 model come in
    # the order they always had, so its weights (and fingerprint) never change.
    makers: dict[str, Callable[[], np.ndarray]] = {
        "attn_norm": lambda: norm(h),
        "q": lambda: linear(q_out, h, 2.0),
        "k": lambda: linear(kv_out, h, 2.0),
        "v": lambda: linear(kv_out, h),
        "q_bias": lambda: (0.1 * rng.standard_normal(q_out)).astype(np.float32),
        "k_bias": lambda: (0.1 * rng.standard_normal(kv_out)).astype(np.float32),
        "v_bias": lambda: (0.1 * rng.standard_normal(kv_out)).astype(np.float32),
        "q_norm": lambda: norm(d),
        "k_norm": lambda: norm(d),
        "o": lambda: linear(h, q_out, 0.5),
        "post_attn_norm": lambda: norm(h),
        "ffn_norm": lambda: norm(h),
        "gate": lambda: linear(i, h),
        "up": lambda: linear(i, h),
        "down": lambda: linear(h, i, 0.5),
        "router": lambda: linear(e, h, 4.0),
        "experts_gate": lambda: experts(e, mi, h),
        "experts_up": lambda: experts(e, mi, h),
        "experts_down": lambda: experts(e, h, mi, 0.5),
        "post_ffn_norm": lambda: norm(h),
    }
    sd: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((config.vocab_size, h)).astype(np.float32)
    }
    if family.embed_scale:  # the model multiplies by sqrt(H): keep the residual stream O(1)
        sd["model.embed_tokens.weight"] /= np.float32(np.sqrt(h))
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        for role, make in makers.items():
            if role in roles:
                sd[p + roles[role]] = make()
    sd["model.norm.weight"] = norm(h)
    if not config.tie_word_embeddings:
        sd["lm_head.weight"] = linear(config.vocab_size, h)
    return sd
