"""The architecture facts every engine needs, independent of where weights come from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pv import stages


@dataclass(frozen=True)
class ModelConfig:
    """A Qwen2/Llama-family decoder. Weights use Hugging Face parameter names."""

    architecture: str  # "qwen2" or "llama"
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

    @property
    def features(self) -> dict[str, bool]:
        """Conditions that switch optional stages on (see ``Stage.requires``)."""
        return {"qkv_bias": self.attention_bias}

    def dims(self, seq_len: int) -> stages.Dims:
        return stages.Dims(
            S=seq_len,
            H=self.hidden_size,
            NH=self.num_attention_heads,
            KVH=self.num_key_value_heads,
            D=self.head_dim,
            I=self.intermediate_size,
            V=self.vocab_size,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


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
