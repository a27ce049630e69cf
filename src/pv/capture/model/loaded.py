"""What every model source produces: a ``LoadedModel`` (config, float32 weights, fingerprint).

The synthetic seeds, a Hugging Face directory and a GGUF file all end up as
this one object; engine and oracle both build from it, so "same weights" is a
fact about one object, pinned by a fingerprint that the capture manifest records.
Kept apart from the loaders (``load``, ``gguf``) so that each of them can build
one without importing the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pv.capture.model.config import ModelConfig
from pv.errors import PvError


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for an engine: config, float32 HF-named weights, provenance."""

    config: ModelConfig
    #: float32, Hugging Face names; no ``lm_head.weight`` when embeddings are tied.
    state_dict: Mapping[str, np.ndarray] = field(repr=False)
    source: str
    #: "synthetic" (seeded, built in) or "real".
    weights: str
    fingerprint: str
    tokenizer: Any = field(default=None, repr=False, compare=False)

    @property
    def architecture(self) -> str:
        return self.config.architecture

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the model."""
        return {
            "path": self.source,
            "architecture": self.architecture,
            "weights": self.weights,
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
        }


def fingerprint(state_dict: Mapping[str, np.ndarray]) -> str:
    """sha256 over sorted names, shapes, dtypes and bytes: equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        arr = np.ascontiguousarray(state_dict[name])
        digest.update(name.encode("utf-8"))
        digest.update(repr((tuple(arr.shape), arr.dtype.str)).encode("ascii"))
        digest.update(arr.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight a model of ``config`` has, by Hugging Face name, with its shape."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q_out, kv_out = config.num_attention_heads * d, config.num_key_value_heads * d
    e, mi = config.num_experts, config.moe_intermediate_size
    by_role: dict[str, tuple[int, ...]] = {
        "attn_norm": (h,), "q": (q_out, h), "k": (kv_out, h), "v": (kv_out, h), "o": (h, q_out),
        "q_bias": (q_out,), "k_bias": (kv_out,), "v_bias": (kv_out,), "q_norm": (d,), "k_norm": (d,),
        "post_attn_norm": (h,), "ffn_norm": (h,), "post_ffn_norm": (h,),
        "gate": (i, h), "up": (i, h), "down": (h, i), "router": (e, h),
        "experts_gate": (e, mi, h), "experts_up": (e, mi, h), "experts_down": (e, h, mi),
    }
    expected: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, h),
                                             "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        expected["lm_head.weight"] = (config.vocab_size, h)
    roles = config.family.roles(config.attention_bias)
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        for role, name in roles.items():
            expected[p + name] = by_role[role]
    return expected


def check_state_dict(config: ModelConfig, state_dict: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse weights that do not fit the config before any engine touches them."""
    for name, shape in expected_shapes(config).items():
        if name not in state_dict:
            raise PvError(f"{source}: weight '{name}' is missing")
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise PvError(f"{source}: weight '{name}' has shape {list(got)}, expected {list(shape)}")
