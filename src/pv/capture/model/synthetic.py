"""Seeded weights for the built-in ``synthetic`` model (no download, numpy only).

Weights are drawn with numpy's PCG64 so they are the same on every machine and
every torch version. Scales keep activations O(1) through the layers, and the
query/key scale is large enough that attention is far from uniform, so a bug
in the scores or the mask shows up in the numbers.

``synthetic:FAMILY-SIZE`` (``synthetic:llama-1b``) is the same family at a real
model's shape (``SIZES``). Its weights are a ``SeededWeights`` mapping: each
tensor is drawn when it is read, from a stream of its own (the seed and the
tensor's name), so any one tensor can be drawn alone, the same on every read,
and nothing holds the whole model: the engine and the oracle each keep the one
copy they compute with, and a 1B-parameter model never exists a third time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from pv.capture.model.config import SYNTHETIC, ConfigValueError, ModelConfig
from pv.capture.model.loaded import expected_shapes
from pv.errors import PvError

SEED = 20260501

#: The small shape every ``synthetic:FAMILY`` starts from; each family's row
#: (``Family.synthetic``) changes what its family needs changed, so that a prompt of a
#: dozen tokens exercises its windows, layer patterns and scalings.
_BASE: dict[str, Any] = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 10000.0,
         "rms_norm_eps": 1e-6, "max_position_embeddings": 512}


#: ``synthetic:FAMILY-SIZE``: the shape of a real model, put over the family's small one
#: (windows, scalings and RoPE of ``Family.synthetic`` stay; a layer pattern repeats to
#: the new depth). 1b: Llama 3.2 1B's layers with a 32,000-token vocabulary, tied, 1.04B
#: parameters.
SIZES: dict[str, dict[str, Any]] = {
    "1b": {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
           "max_position_embeddings": 8192, "tie_word_embeddings": True},
}


def split_size(name: str) -> tuple[str, str | None]:
    """``llama-1b`` -> (``llama``, ``1b``); a name without a known size -> (name, None)."""
    family, dash, size = name.rpartition("-")
    return (family, size.lower()) if dash and size.lower() in SIZES else (name, None)


def family_config(name: str) -> ModelConfig:
    """The config of ``synthetic:FAMILY`` (family names or ``model_type`` aliases) or ``FAMILY-SIZE``."""
    from pv.capture.model import arch

    family_name, size = split_size(name)
    try:
        family = arch.get(family_name)
    except PvError:
        raise PvError(f"unknown synthetic family '{name}'; choose one of {arch.names()}, "
                      f"optionally with a size ({', '.join('-' + s for s in SIZES)})") from None
    fields = {**_BASE, **family.synthetic}
    if size is not None:
        if family.moe:
            raise PvError(f"synthetic:{name}: sizes are shapes of dense models and {family.name} "
                          "is a mixture of experts")
        fields.update(SIZES[size])
        pattern = tuple(fields.get("layer_types", ()))
        if pattern:
            n = fields["num_hidden_layers"]
            fields["layer_types"] = tuple(pattern[i % len(pattern)] for i in range(n))
    try:
        return ModelConfig(architecture=family.name, **fields)
    except ConfigValueError as exc:
        raise PvError(f"synthetic:{name}: {exc}") from None


#: How each weight role is drawn: ("linear", gain): N(0, 1) * gain / sqrt(fan_in);
#: ("norm", 0): 1 + 0.1 N(0, 1) (0 + ... for offset norms); ("bias", 0.1): 0.1 N(0, 1).
DRAWS: dict[str, tuple[str, float]] = {
    "attn_norm": ("norm", 0.0), "q": ("linear", 2.0), "k": ("linear", 2.0), "v": ("linear", 1.0),
    "q_bias": ("bias", 0.1), "k_bias": ("bias", 0.1), "v_bias": ("bias", 0.1),
    "q_norm": ("norm", 0.0), "k_norm": ("norm", 0.0), "o": ("linear", 0.5),
    "post_attn_norm": ("norm", 0.0), "ffn_norm": ("norm", 0.0),
    "gate": ("linear", 1.0), "up": ("linear", 1.0), "down": ("linear", 0.5),
    "router": ("linear", 4.0), "experts_gate": ("linear", 1.0), "experts_up": ("linear", 1.0),
    "experts_down": ("linear", 0.5), "post_ffn_norm": ("norm", 0.0),
    "embed": ("embed", 0.0), "final_norm": ("norm", 0.0), "lm_head": ("linear", 1.0),
}


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
        "q": lambda: linear(q_out, h, DRAWS["q"][1]),
        "k": lambda: linear(kv_out, h, DRAWS["k"][1]),
        "v": lambda: linear(kv_out, h),
        "q_bias": lambda: (0.1 * rng.standard_normal(q_out)).astype(np.float32),
        "k_bias": lambda: (0.1 * rng.standard_normal(kv_out)).astype(np.float32),
        "v_bias": lambda: (0.1 * rng.standard_normal(kv_out)).astype(np.float32),
        "q_norm": lambda: norm(d),
        "k_norm": lambda: norm(d),
        "o": lambda: linear(h, q_out, DRAWS["o"][1]),
        "post_attn_norm": lambda: norm(h),
        "ffn_norm": lambda: norm(h),
        "gate": lambda: linear(i, h),
        "up": lambda: linear(i, h),
        "down": lambda: linear(h, i, DRAWS["down"][1]),
        "router": lambda: linear(e, h, DRAWS["router"][1]),
        "experts_gate": lambda: experts(e, mi, h),
        "experts_up": lambda: experts(e, mi, h),
        "experts_down": lambda: experts(e, h, mi, DRAWS["experts_down"][1]),
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


class SeededWeights(Mapping[str, np.ndarray]):
    """The float32 weights of ``config``, each drawn when read from its own stream (see the module docstring).

    Nothing is cached: a reader keeps what it reads, and reading a tensor twice draws
    the same values twice. ``fingerprint`` names the recipe (config, seed, scheme),
    which fixes every value, so it is known without drawing any.
    """

    SCHEME = "pv seeded per-tensor float32 v1"

    def __init__(self, config: ModelConfig, seed: int = SEED) -> None:
        self.config = config
        self.seed = int(seed)
        self.shapes = expected_shapes(config)
        roles = config.family.roles(config.attention_bias)
        self.roles = {"model.embed_tokens.weight": "embed", "model.norm.weight": "final_norm",
                      "lm_head.weight": "lm_head"}
        for layer in range(config.num_hidden_layers):
            self.roles.update({f"model.layers.{layer}.{suffix}": role for role, suffix in roles.items()})

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(key,))))
        values = rng.standard_normal(shape, dtype=np.float32)
        kind, gain = DRAWS[self.roles[name]]
        if kind == "linear":
            values *= np.float32(gain / np.sqrt(shape[-1]))
        elif kind == "norm":
            values *= np.float32(0.1)
            if not self.config.family.norm_offset:  # Gemma's norms multiply by (1 + w)
                values += np.float32(1.0)
        elif kind == "bias":
            values *= np.float32(gain)
        elif self.config.family.embed_scale:  # the embedding: keep the residual stream O(1)
            values /= np.float32(np.sqrt(self.config.hidden_size))
        return values

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def parameters(self) -> int:
        """How many values the model holds (tied embeddings counted once)."""
        return sum(int(np.prod(shape)) for shape in self.shapes.values())

    def fingerprint(self) -> str:
        recipe = {"scheme": self.SCHEME, "seed": self.seed, "config": self.config.to_dict()}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode("utf-8")).hexdigest()
