"""The engine's weights: read once from the state dict, cast to the compute dtype, fused for the forward.

Every tensor goes through float32 on the way in (the state dict may hold
float16 or GGUF-dequantised arrays) and is then cast to the compute dtype, so
all dtypes start from the same values. Wq|Wk|Wv and W_gate|W_up are
concatenated once here, so the forward does one matmul where the equations
have two or three. Which weights a layer has comes from the family's weight
roles (``pv.capture.model.arch``); a role the family lacks is ``None``.

Gemma's norm weights are stored as ``1 + w`` in float32 (``Family.norm_offset``;
the forward then multiplies before the cast): that changes the weights
themselves, so it is decided here. ``Loader.layer`` takes the two choices a
planted fault can change at load time (which roles fill the k and v slots,
what the norms add), so ``kv_weights_swapped`` and ``norm_weight_no_offset``
reload their layer instead of branching anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pv.capture.model.loaded import LoadedModel
from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: Any
    wqkv: Any  # [NH*D + 2*KVH*D, H]: Wq | Wk | Wv, concatenated once at load
    bqkv: Any  # [NH*D + 2*KVH*D] or None
    wo: Any
    ffn_norm: Any
    wgu: Any  # [2*I, H]: W_gate | W_up (None for MoE)
    wdown: Any
    q_norm: Any = None  # [D] per-head norms (Qwen3, Gemma 3)
    k_norm: Any = None
    post_attn_norm: Any = None  # sandwich norms (Gemma 3)
    post_ffn_norm: Any = None
    router: Any = None  # [E, H]
    experts_gu: Any = None  # [E, 2*I_moe, H]: gate | up per expert
    experts_down: Any = None  # [E, H, I_moe]


@dataclass(frozen=True)
class Weights:
    """Everything the forward multiplies by, on the device, in the compute dtype (norms: see above)."""

    embed: Any  # [V, H]
    lm_head: Any  # [V, H]; the embedding itself when tied
    final_norm: Any  # [H]
    embed_scale: Any  # sqrt(H) in the compute dtype (Gemma), else None
    layers: list[LayerWeights]


class Loader:
    """Reads the model's weights for the engine, one layer at a time, on the device in the compute dtype."""

    def __init__(self, model: LoadedModel, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.config = model.config
        self.roles = model.config.family.roles(model.config.attention_bias)

    def tensor(self, name: str) -> torch.Tensor:
        arr = np.asarray(self.model.state_dict[name], dtype=np.float32)
        src = torch.from_numpy(arr) if arr.flags.writeable else torch.tensor(arr)
        return src.to(device=self.device, dtype=self.dtype)

    def norm(self, name: str, shift: float = 1.0) -> torch.Tensor:
        """A norm weight; Gemma's as ``shift + w`` in float32 from the weight as stored in the compute dtype."""
        w = self.tensor(name)
        return w.float() + shift if self.config.family.norm_offset else w

    def layer(self, i: int, *, qkv: tuple[str, str, str] = ("q", "k", "v"),
              gate_up: tuple[str, str] = ("gate", "up"), norm_shift: float = 1.0) -> LayerWeights:
        """Layer ``i``'s weights; ``qkv`` and ``gate_up`` name the roles loaded into the q, k, v
        and gate, up slots, ``norm_shift`` what Gemma's norms add to their weight (a planted
        fault changes any of them)."""
        cfg, roles, t = self.config, self.roles, self.tensor
        p = f"model.layers.{i}."

        def opt(role: str) -> torch.Tensor | None:
            return self.norm(p + roles[role], norm_shift) if role in roles else None

        wq, wk, wv = (t(p + roles[r]) for r in qkv)
        bqkv = None
        if cfg.attention_bias:
            bqkv = torch.cat([t(p + roles[f"{n}_bias"]) for n in "qkv"]).contiguous()
        moe = cfg.family.moe
        return LayerWeights(
            attn_norm=self.norm(p + roles["attn_norm"], norm_shift),
            wqkv=torch.cat([wq, wk, wv], dim=0).contiguous(),
            bqkv=bqkv,
            wo=t(p + roles["o"]),
            ffn_norm=self.norm(p + roles["ffn_norm"], norm_shift),
            wgu=None if moe else torch.cat([t(p + roles[r]) for r in gate_up]).contiguous(),
            wdown=None if moe else t(p + roles["down"]),
            q_norm=opt("q_norm"),
            k_norm=opt("k_norm"),
            post_attn_norm=opt("post_attn_norm"),
            post_ffn_norm=opt("post_ffn_norm"),
            router=t(p + roles["router"]) if moe else None,
            experts_gu=torch.cat([t(p + roles["experts_gate"]), t(p + roles["experts_up"])],
                                 dim=1).contiguous() if moe else None,
            experts_down=t(p + roles["experts_down"]) if moe else None,
        )

    def load(self) -> Weights:
        cfg, t = self.config, self.tensor
        embed = t("model.embed_tokens.weight")
        return Weights(
            embed=embed,
            lm_head=embed if cfg.tie_word_embeddings else t("lm_head.weight"),
            final_norm=self.norm("model.norm.weight"),
            embed_scale=(torch.tensor(math.sqrt(cfg.hidden_size), dtype=torch.float32)
                         .to(self.dtype).to(self.device) if cfg.family.embed_scale else None),
            layers=[self.layer(i) for i in range(cfg.num_hidden_layers)],
        )
