"""The architecture facts every engine needs, independent of where weights come from."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pv import stages
from pv.bounded import brief
from pv.capture.model import arch
from pv.errors import PvError


@dataclass(frozen=True)
class ModelConfig:
    """A decoder of one registered family (``pv.capture.model.arch``). Weights use Hugging Face names."""

    architecture: str  # a family name in pv.capture.model.arch.FAMILIES ("qwen2", "llama", "gemma3_text", ...)
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    #: "silu" or "gelu_tanh" (``arch.ACTIVATIONS``).
    hidden_act: str = "silu"
    #: Keys a query sees on a windowed layer: key > query - window (transformers' rule).
    sliding_window: int | None = None
    #: Per layer "full_attention" or "sliding_attention"; empty: the family's mask decides.
    layer_types: tuple[str, ...] = ()
    #: RoPE base of the sliding-window layers when it differs (Gemma 3: 10000).
    rope_local_theta: float | None = None
    #: {"rope_type": "llama3"|"linear", "factor": ..., ...} as in config.json; None: plain RoPE.
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False)
    #: Per-frequency divisors (GGUF ``rope_freqs``), applied to the global layers' frequencies.
    rope_freq_factors: tuple[float, ...] | None = None
    #: Scores are scaled by query_pre_attn_scalar**-0.5 instead of head_dim**-0.5 (Gemma).
    query_pre_attn_scalar: float | None = None
    #: Granite's scalings: the embedding rows times one, each residual branch times another
    #: before it is added, the scores times ``attention_multiplier`` (instead of any of the
    #: above), the logits divided by ``logits_scaling``. 1.0 (None) everywhere else.
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float | None = None
    logits_scaling: float = 1.0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True

    def __post_init__(self) -> None:
        check_values(self)

    @property
    def family(self) -> arch.Family:
        return arch.get(self.architecture)

    @property
    def features(self) -> dict[str, bool]:
        """Conditions that switch optional stages (``Stage.requires``) and faults on."""
        out = self.family.features(self.attention_bias)
        out["sliding_window"] = any(self.layer_window(i) is not None for i in range(self.num_hidden_layers))
        out["gelu_tanh"] = self.hidden_act == "gelu_tanh"
        out["norm_offset"] = self.family.norm_offset
        out["norm_topk_prob"] = self.family.moe and self.norm_topk_prob
        out["embedding_multiplier"] = self.embedding_multiplier != 1.0
        out["residual_multiplier"] = self.residual_multiplier != 1.0
        out["attention_multiplier"] = self.attention_multiplier is not None
        out["logits_scaling"] = self.logits_scaling != 1.0
        return out

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of ``layer``, or None when it attends to every earlier key."""
        if self.sliding_window is None:
            return None
        if self.layer_types:
            return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None
        return self.sliding_window if self.family.mask == "sliding_window" else None

    def layer_theta(self, layer: int) -> float:
        """The RoPE base of ``layer`` (local layers may have their own)."""
        if self.rope_local_theta is not None and self.layer_window(layer) is not None:
            return self.rope_local_theta
        return self.rope_theta

    @property
    def attention_scale(self) -> float:
        """What the scores are multiplied by: Granite's multiplier, else Gemma's scalar**-0.5, else D**-0.5."""
        if self.attention_multiplier is not None:
            return self.attention_multiplier
        return 1.0 / math.sqrt(float(self.query_pre_attn_scalar or self.head_dim))

    def mask_policy(self) -> dict[str, Any]:
        """The manifest's record of the attention mask: kind, window and per-layer types."""
        windows = [self.layer_window(i) for i in range(self.num_hidden_layers)]
        kind = "causal" if all(w is None for w in windows) else self.family.mask
        return {"kind": kind, "sliding_window": self.sliding_window,
                "layer_types": ["causal" if w is None else f"sliding_window:{w}" for w in windows]}

    def dims(self, seq_len: int) -> stages.Dims:
        return stages.Dims(
            S=seq_len,
            H=self.hidden_size,
            NH=self.num_attention_heads,
            KVH=self.num_key_value_heads,
            D=self.head_dim,
            I=self.intermediate_size,
            V=self.vocab_size,
            E=self.num_experts,
            K=self.num_experts_per_tok,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("layer_types", "rope_freq_factors"):  # JSON lists back to tuples
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)


class ConfigValueError(PvError, ValueError):
    """A model config value no model can have (zero heads, a negative size, NaN theta)."""


#: Largest size pv accepts for any one dimension: tensors are indexed with int32 in places.
MAX_SIZE = 2**31 - 1
_POSITIVE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "max_position_embeddings")
_NON_NEGATIVE = ("intermediate_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size")
_LAYER_TYPES = ("full_attention", "sliding_attention")


def _int_in(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_SIZE


def _positive_float(value: Any, zero_ok: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and (value > 0 or (zero_ok and value == 0))


def _value_problem(cfg: ModelConfig) -> str | None:
    for name in _POSITIVE + _NON_NEGATIVE:
        value = getattr(cfg, name)
        low = 1 if name in _POSITIVE else 0
        if not _int_in(value, low):
            return f"{name} must be an integer in {low}..{MAX_SIZE}, not {brief(value)}"
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        return (f"num_attention_heads ({cfg.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({cfg.num_key_value_heads})")
    if cfg.intermediate_size == 0 and cfg.num_experts == 0:
        return "intermediate_size must be at least 1 for a dense (non-MoE) model"
    if cfg.num_experts_per_tok > cfg.num_experts:
        return f"num_experts_per_tok ({cfg.num_experts_per_tok}) exceeds num_experts ({cfg.num_experts})"
    if not _positive_float(cfg.rope_theta):
        return f"rope_theta must be a finite positive number, not {brief(cfg.rope_theta)}"
    if not _positive_float(cfg.rms_norm_eps, zero_ok=True):
        return f"rms_norm_eps must be a finite number >= 0, not {brief(cfg.rms_norm_eps)}"
    for name in ("rope_local_theta", "query_pre_attn_scalar", "embedding_multiplier", "residual_multiplier",
                 "attention_multiplier", "logits_scaling"):
        value = getattr(cfg, name)
        if value is not None and not _positive_float(value):
            return f"{name} must be a finite positive number, not {brief(value)}"
    if cfg.sliding_window is not None and not _int_in(cfg.sliding_window, 1):
        return f"sliding_window must be an integer in 1..{MAX_SIZE}, not {brief(cfg.sliding_window)}"
    if cfg.layer_types:
        if len(cfg.layer_types) != cfg.num_hidden_layers:
            return (f"layer_types lists {len(cfg.layer_types)} layers, the model has "
                    f"{cfg.num_hidden_layers}")
        bad = [t for t in cfg.layer_types if t not in _LAYER_TYPES]
        if bad:
            return f"layer_types: {brief(bad[0])} is not one of {', '.join(_LAYER_TYPES)}"
    factors = cfg.rope_freq_factors
    if factors is not None and not all(_positive_float(x) for x in factors):
        return "rope_freq_factors must be finite positive numbers"
    if not isinstance(cfg.hidden_act, str):
        return f"hidden_act must be a string, not {brief(cfg.hidden_act)}"
    return None


def check_values(cfg: ModelConfig) -> None:
    """Refuse a config no model can have, before any size is used to allocate or divide."""
    problem = _value_problem(cfg)
    if problem:
        raise ConfigValueError(f"model config: {problem}")


#: The built-in default model: small, Qwen2-style, with qkv bias and GQA (4 query
#: heads sharing 2 kv heads), untied embeddings, so every stage and mapping is exercised.
SYNTHETIC = ModelConfig(
    architecture="qwen2",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    attention_bias=True,
    max_position_embeddings=512,
)
