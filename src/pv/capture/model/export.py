"""Write a model as a Hugging Face directory or as a GGUF file (float32, no quantisation).

Used to check the loaders on every family without downloads: the seeded weights
of ``synthetic:FAMILY`` are written the way real checkpoints are laid out
(``config.json`` + ``model.safetensors`` with per-expert MoE tensors and Phi-3's
fused ones; a GGUF with llama.cpp's tensor names, metadata keys, Q/K row
permutation, Gemma's ``1 + w`` norm weights, llama3 ``rope_freqs`` and Phi-3's
fused ``attn_qkv``/``ffn_up``), then read back through
``load_model`` like any user's file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pv.capture.model import arch
from pv.capture.model.config import ModelConfig
from pv.capture.model.fused import fuse
from pv.errors import PvError, require


def write_hf_directory(config: ModelConfig, state_dict: dict[str, np.ndarray], directory: str | Path) -> Path:
    """``config.json`` + ``model.safetensors`` as transformers checkpoints have them."""
    from pv.capture.model.hf_config import to_hf_dict

    safetensors_numpy = require("safetensors.numpy")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    family = config.family
    block, parts = family.hf_moe_block, family.hf_expert_parts
    tensors: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if ".mlp.experts." in name:  # stacked [E, ...] -> one tensor per expert, as on the hub
            prefix, part = name.split(".mlp.experts.")
            matrix, _, kind = part.partition(".")
            for e in range(value.shape[0]):
                key = f"{prefix}.{block}.experts.{e}.{parts.get(matrix, matrix)}.{kind}"
                tensors[key] = np.ascontiguousarray(value[e])
        elif family.moe and ".mlp." in name:  # the router, under the block's hub name
            tensors[name.replace(".mlp.", f".{block}.")] = np.ascontiguousarray(value, dtype=np.float32)
        else:
            tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
    if family.hf_fused:  # one checkpoint tensor for several roles, as on the hub (Phi-3)
        tensors = fuse(tensors, config, family.hf_fused)
    (out / "config.json").write_text(json.dumps(to_hf_dict(config), indent=1) + "\n", encoding="utf-8")
    safetensors_numpy.save_file(tensors, str(out / "model.safetensors"))
    return out


def _permute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotate-half rows -> llama.cpp's interleaved rows (inverse of the reader's)."""
    half = weight.shape[0] // n_head // 2
    grouped = weight.reshape(n_head, 2, half, *weight.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2).reshape(weight.shape))


def _write_tokenizer(writer: Any, vocab_size: int) -> None:
    """A SentencePiece vocabulary of ``vocab_size`` pieces: llama.cpp refuses a GGUF without one.

    ``<unk>``, ``<s>``, ``</s>`` at 0, 1, 2 (llama.cpp's SentencePiece defaults), then
    byte pieces ``<0x00>``, ``<0x01>``, ... while there is room, then plain pieces.
    """
    gguf = require("gguf")
    if vocab_size < 14:
        raise PvError(f"a GGUF vocabulary needs at least 14 tokens (<unk>, <s>, </s>, bytes up to '\\n'); "
                      f"the model has {vocab_size}")
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(min(256, vocab_size - 3)):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    while len(tokens) < vocab_size:
        tokens.append(f"piece{len(tokens)}")
        types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab_size)
    writer.add_token_types([int(t) for t in types])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def write_gguf(config: ModelConfig, state_dict: dict[str, np.ndarray], path: str | Path, *,
               per_expert: bool = False) -> Path:
    """A float32 GGUF file of the model, as llama.cpp's converter lays it out.

    ``per_expert``: Mixtral's experts one tensor each (``blk.N.ffn_gate.E.weight``),
    as converters wrote them before llama.cpp stacked them, instead of stacked.
    """
    gguf = require("gguf")
    from pv.capture.model.rope import llama3_factors

    family = config.family
    if per_expert and not family.gguf_per_expert:
        raise PvError(f"per-expert GGUF tensors exist for Mixtral only, not {family.name}")
    name = family.gguf_arch
    if name is None:
        raise PvError(f"no GGUF layout for family {family.name}")
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), name)
    u32, f32 = writer.add_uint32, writer.add_float32
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    u32(f"{name}.context_length", config.max_position_embeddings)
    u32(f"{name}.embedding_length", config.hidden_size)
    u32(f"{name}.block_count", config.num_hidden_layers)
    # Mixtral's config names its expert size intermediate_size; llama.cpp writes it as such
    expert_ff_key = family.moe_config_keys.get("moe_intermediate_size")
    ff = config.moe_intermediate_size if expert_ff_key == "intermediate_size" else config.intermediate_size
    u32(f"{name}.feed_forward_length", ff)
    u32(f"{name}.attention.head_count", config.num_attention_heads)
    u32(f"{name}.attention.head_count_kv", config.num_key_value_heads)
    u32(f"{name}.attention.key_length", config.head_dim)
    u32(f"{name}.attention.value_length", config.head_dim)
    u32(f"{name}.vocab_size", config.vocab_size)
    f32(f"{name}.rope.freq_base", config.rope_theta)
    f32(f"{name}.attention.layer_norm_rms_epsilon", config.rms_norm_eps)
    if config.sliding_window is not None:
        u32(f"{name}.attention.sliding_window", config.sliding_window)
    if family.mask == "layer_pattern":
        pattern = next((i + 1 for i, t in enumerate(config.layer_types) if t == "full_attention"), 6)
        u32(f"{name}.attention.sliding_window_pattern", pattern)
    for field, (key, default) in family.gguf_keys.items():  # the family's own scalars
        value = getattr(config, field)
        value = default if value is None else value
        if value is None:
            raise PvError(f"a {name} GGUF needs {name}.{key}, but the model's {field} is not set")
        f32(f"{name}.{key}", value)
    if config.query_pre_attn_scalar not in (None, float(config.head_dim)):
        f32(f"{name}.attention.scale", config.attention_scale)
    if family.moe:
        u32(f"{name}.expert_count", config.num_experts)
        u32(f"{name}.expert_used_count", config.num_experts_per_tok)
        if expert_ff_key != "intermediate_size":
            u32(f"{name}.expert_feed_forward_length", config.moe_intermediate_size)
    _write_tokenizer(writer, config.vocab_size)
    if config.rope_scaling is not None and config.rope_scaling.get("rope_type") == "llama3":
        factors = llama3_factors(config.head_dim, config.rope_theta, config.rope_scaling)
        writer.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32))
    globals_ = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
    gguf_of_role = {role: part for part, role in arch.GGUF_BLOCK_ROLES.items()}
    tensors: dict[str, Any] = {}
    for hf, gg in globals_.items():
        if hf in state_dict:
            tensors[gg] = state_dict[hf]
    for layer in range(config.num_hidden_layers):
        for role, hf in family.roles(config.attention_bias).items():
            base = role.removesuffix("_bias")
            value = np.asarray(state_dict[f"model.layers.{layer}.{hf}"], dtype=np.float32)
            if family.gguf_permuted_qk and base in ("q", "k"):
                value = _permute_rope_rows(value, config.num_attention_heads if base == "q"
                                           else config.num_key_value_heads)
            kind = "bias" if role.endswith("_bias") else "weight"
            if per_expert and base.startswith("experts_"):
                part = gguf_of_role[base].removesuffix("_exps")
                for e in range(value.shape[0]):
                    tensors[f"blk.{layer}.{part}.{e}.{kind}"] = value[e]
                continue
            tensors[f"blk.{layer}.{gguf_of_role[base]}.{kind}"] = value
    if family.gguf_fused:  # llama.cpp's converter writes them fused (Phi-3's attn_qkv, ffn_up)
        by_role = {f"model.layers.{i}.{hf}": tensors.pop(f"blk.{i}.{gguf_of_role[role]}.weight")
                   for i in range(config.num_hidden_layers)
                   for role, hf in family.roles(False).items()
                   if any(role in roles for roles in family.gguf_fused.values())}
        tensors.update(fuse(by_role, config, family.gguf_fused, lambda i, part: f"blk.{i}.{part}.weight"))
    for gg, value in tensors.items():
        value = np.ascontiguousarray(value, dtype=np.float32)
        if family.gguf_norm_shift and gg.endswith("norm.weight"):
            value = value + np.float32(family.gguf_norm_shift)
        writer.add_tensor(gg, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
