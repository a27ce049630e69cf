"""The architecture facts every engine needs, independent of where weights come from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pv import stages
from pv.capture import arch


@dataclass(frozen=True)
class ModelConfig:
    """A decoder of one registered family (``pv.capture.arch``). Weights use Hugging Face names."""

    architecture: str  # a family name in pv.capture.arch.FAMILIES ("qwen2", "llama", "gemma3_text", ...)
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
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True

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
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

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
