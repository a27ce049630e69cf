"""Fixtures shared by the capture tests: small GGUF files (the real-weights models: the root conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter reorder of Q/K rows for Llama (HF rotate-half -> interleaved)."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    _, _, layer, rest = hf.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_TO_GGUF[module]}.{kind}"


def write_gguf(
    path: Path,
    config: Any,
    state_dict: dict[str, np.ndarray],
    *,
    arch: str | None = None,
    qtype: str = "F32",
    tokenizer: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    raw: dict[str, tuple[np.ndarray, str]] | None = None,
) -> Path:
    """Write ``state_dict`` as llama.cpp would: its names, Q/K permuted for Llama, 2-D weights in ``qtype``."""
    import gguf
    from gguf.quants import quantize

    arch = arch or config.architecture
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_dimension_count(config.head_dim)
    w.add_vocab_size(config.vocab_size)
    if tokenizer:
        w.add_tokenizer_model(tokenizer.get("model", "gpt2"))
        w.add_tokenizer_pre(tokenizer.get("pre", "default"))
        w.add_token_list(tokenizer["tokens"])
        w.add_token_types(tokenizer["types"])
        w.add_token_merges(tokenizer["merges"])
    q = gguf.GGMLQuantizationType[qtype]
    for name, value in state_dict.items():
        if name in drop:
            continue
        arr = np.asarray(value, dtype=np.float32)
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            heads = config.num_attention_heads if ".q_proj." in name else config.num_key_value_heads
            arr = llama_cpp_permute(arr, heads)
        if arr.ndim == 2 and q != gguf.GGMLQuantizationType.F32:
            data = quantize(arr, q)
            w.add_tensor(gguf_name(name), data, raw_shape=data.shape, raw_dtype=q)
        else:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(arr))
    for name, (data, kind) in (raw or {}).items():
        w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def gguf_writer() -> Callable[..., Path]:
    """``write_gguf(path, config, state_dict, ...)``: a small GGUF file in llama.cpp's layout."""
    pytest.importorskip("gguf")
    return write_gguf


@pytest.fixture
def llama_permute() -> Callable[[np.ndarray, int], np.ndarray]:
    """llama.cpp's Q/K row permutation, for checking that the loader undoes it."""
    return llama_cpp_permute
