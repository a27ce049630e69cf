"""The engine's weights: read once from the state dict, cast to the compute dtype, fused for the forward.

Every tensor goes through float32 on the way in (the state dict may hold
float16 or GGUF-dequantised arrays) and is then cast to the compute dtype, so
all dtypes start from the same values. Wq|Wk|Wv and W_gate|W_up are
concatenated once here, so the forward does one matmul where the equations
have two or three. Which weights a layer has comes from the family's weight
roles (``pv.capture.model.arch``); a role the family lacks is ``None``.

Two things are decided here rather than in the forward because they change the
weights themselves: Gemma's norm weights are stored as ``1 + w`` in float32
(``Family.norm_offset``, the forward then multiplies before the cast), and the
faults ``kv_weights_swapped`` and ``norm_weight_no_offset`` plant their bug at
load time in the layer they hit.
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
    window: int | None = None  # sliding window of this layer, None: full causal
    rope: str = ""  # key of this layer's RoPE tables


@dataclass(frozen=True)
class Weights:
    """Everything the forward multiplies by, on the device, in the compute dtype (norms: see above)."""

    embed: Any  # [V, H]
    lm_head: Any  # [V, H]; the embedding itself when tied
    final_norm: Any  # [H]
    embed_scale: Any  # sqrt(H) in the compute dtype (Gemma), else None
    layers: list[LayerWeights]


def load(model: LoadedModel, device: torch.device, dtype: torch.dtype,
         fault: str | None = None, fault_layer: int | None = None) -> Weights:
    """The model's weights for the engine; ``fault``/``fault_layer`` name the engine's planted bug, if any."""
    cfg = model.config
    sd = model.state_dict
    family = cfg.family
    offset_norm = family.norm_offset

    def t(name: str) -> torch.Tensor:
        arr = np.asarray(sd[name], dtype=np.float32)
        src = torch.from_numpy(arr) if arr.flags.writeable else torch.tensor(arr)
        return src.to(device=device, dtype=dtype)

    def norm_w(name: str, shift: float = 1.0) -> torch.Tensor:
        # Gemma: (1 + w) in float32 from the weight as stored in the compute dtype.
        w = t(name)
        return w.float() + shift if offset_norm else w

    roles = family.roles(cfg.attention_bias)
    embed = t("model.embed_tokens.weight")
    lm_head = embed if cfg.tie_word_embeddings else t("lm_head.weight")
    final_norm = norm_w("model.norm.weight")
    embed_scale = (torch.tensor(math.sqrt(cfg.hidden_size), dtype=torch.float32)
                   .to(dtype).to(device) if family.embed_scale else None)
    layers: list[LayerWeights] = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        shift = 0.0 if (fault, fault_layer) == ("norm_weight_no_offset", i) else 1.0

        def opt(role: str, p: str = p, shift: float = shift) -> torch.Tensor | None:
            return norm_w(p + roles[role], shift) if role in roles else None

        wq, wk, wv = (t(p + roles[n]) for n in "qkv")
        if fault == "kv_weights_swapped" and fault_layer == i:
            wk, wv = wv, wk
        bqkv = None
        if cfg.attention_bias:
            bqkv = torch.cat([t(p + roles[f"{n}_bias"]) for n in "qkv"]).contiguous()
        moe = family.moe
        layers.append(
            LayerWeights(
                attn_norm=norm_w(p + roles["attn_norm"], shift),
                wqkv=torch.cat([wq, wk, wv], dim=0).contiguous(),
                bqkv=bqkv,
                wo=t(p + roles["o"]),
                ffn_norm=norm_w(p + roles["ffn_norm"], shift),
                wgu=None if moe else torch.cat([t(p + roles["gate"]), t(p + roles["up"])]).contiguous(),
                wdown=None if moe else t(p + roles["down"]),
                q_norm=opt("q_norm"),
                k_norm=opt("k_norm"),
                post_attn_norm=opt("post_attn_norm"),
                post_ffn_norm=opt("post_ffn_norm"),
                router=t(p + roles["router"]) if moe else None,
                experts_gu=torch.cat([t(p + roles["experts_gate"]), t(p + roles["experts_up"])],
                                     dim=1).contiguous() if moe else None,
                experts_down=t(p + roles["experts_down"]) if moe else None,
                window=cfg.layer_window(i),
                rope="local" if cfg.layer_theta(i) != cfg.rope_theta else "global",
            )
        )
    return Weights(embed=embed, lm_head=lm_head, final_norm=final_norm, embed_scale=embed_scale, layers=layers)
