"""Checkpoint tensors that hold several weight roles, split into pv's one tensor per role and back.

Phi-3's checkpoints store ``self_attn.qkv_proj`` (Wq|Wk|Wv) and ``mlp.gate_up_proj``
(W_gate|W_up), and its GGUFs ``attn_qkv`` and a ``ffn_up`` of twice the width. A
family's row says which (``Family.hf_fused``, ``Family.gguf_fused``: tensor -> the
roles it holds, in row order). pv splits them on load, so its state dict has one
tensor per role for every family: the engine (which concatenates Wq|Wk|Wv and
W_gate|W_up itself, for every family), the synthetic weights, the fingerprint, the
faults that reload a layer and the GGUF writer never see a fused layout. Writers
(a Hugging Face directory, a GGUF, the oracle's transformers module) fuse them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from pv.capture.model.config import ModelConfig
from pv.errors import PvError

#: (layer, fused tensor's name in the table) -> its full name in the state dict or file.
Naming = Callable[[int, str], str]


def role_rows(cfg: ModelConfig, roles: tuple[str, ...]) -> list[int]:
    """How many rows each role takes in a fused tensor: q NH*D, k and v KVH*D, gate and up I."""
    sizes = {"q": cfg.num_attention_heads * cfg.head_dim, "k": cfg.num_key_value_heads * cfg.head_dim,
             "v": cfg.num_key_value_heads * cfg.head_dim, "gate": cfg.intermediate_size,
             "up": cfg.intermediate_size}
    return [sizes[r] for r in roles]


def hf_naming(layer: int, part: str) -> str:
    """A Hugging Face checkpoint's name of a fused layer tensor (``self_attn.qkv_proj``)."""
    return f"model.layers.{layer}.{part}.weight"


def split(sd: Mapping[str, np.ndarray], cfg: ModelConfig, fused: Mapping[str, tuple[str, ...]],
          naming: Naming = hf_naming, source: str = "") -> dict[str, np.ndarray]:
    """Each fused tensor of ``sd`` (named by ``naming``) -> one tensor per role, pv's names."""
    out = dict(sd)
    names = cfg.family.roles(False)
    for layer in range(cfg.num_hidden_layers):
        for part, roles in fused.items():
            value = out.pop(naming(layer, part), None)
            if value is None:
                continue
            rows = role_rows(cfg, roles)
            if value.shape[0] != sum(rows):
                where = f"{source}: " if source else ""
                raise PvError(f"{where}{naming(layer, part)} has {value.shape[0]} rows; "
                              f"{'|'.join(roles)} of this config needs {sum(rows)}")
            for role, piece in zip(roles, np.split(value, np.cumsum(rows)[:-1]), strict=True):
                out[f"model.layers.{layer}.{names[role]}"] = np.ascontiguousarray(piece)
    return out


def held(names: Iterable[str], cfg: ModelConfig, fused: Mapping[str, tuple[str, ...]],
         naming: Naming = hf_naming) -> dict[str, str]:
    """pv name of each role that a fused tensor among ``names`` holds -> that tensor's name."""
    roles, present = cfg.family.roles(False), set(names)
    return {f"model.layers.{i}.{roles[r]}": naming(i, part) for i in range(cfg.num_hidden_layers)
            for part, parts in fused.items() if naming(i, part) in present for r in parts}


def fuse(sd: Mapping[str, np.ndarray], cfg: ModelConfig, fused: Mapping[str, tuple[str, ...]],
         naming: Naming = hf_naming) -> dict[str, np.ndarray]:
    """The inverse of ``split``: the roles of each fused tensor concatenated under its name."""
    out = dict(sd)
    names = cfg.family.roles(False)
    for layer in range(cfg.num_hidden_layers):
        for part, roles in fused.items():
            pieces = [out.pop(f"model.layers.{layer}.{names[r]}") for r in roles]
            out[naming(layer, part)] = np.ascontiguousarray(np.concatenate(pieces, axis=0))
    return out
