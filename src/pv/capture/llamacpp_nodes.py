"""Which llama.cpp graph node feeds which pv stage, and the layout facts the conversion needs.

Nodes are identified by ggml name (``attn_norm-3``: base name and layer), ggml op
and occurrence, because one name covers several ops (``Qcur-N`` is a MUL_MAT,
a RESHAPE and a ROPE). The table is read by ``pv.capture.llamacpp``; the
``llama.cpp`` import mapping (``pv/mappings/llama.cpp.yaml``) follows the same
names for dumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Stages no llama.cpp node holds, and why.
NOT_EXPOSED: dict[str, str] = {
    "ffn_silu": "llama.cpp computes SiLU and the product in one fused SWIGLU op",
}


@dataclass(frozen=True)
class Rule:
    """A llama.cpp graph node that feeds a pv stage."""

    name: str  # ggml base name, without the ``-LAYER`` suffix
    op: str  # ggml op name, as ggml_op_name() returns it
    stage: str  # pv stage (or a qkv part)
    per_layer: bool = True
    occurrence: int = 0  # which node of this name and op, in graph order


RULES: tuple[Rule, ...] = (
    Rule("embd", "GET_ROWS", "embedding", per_layer=False),
    Rule("attn_norm", "MUL", "attn_norm"),
    Rule("Qcur", "MUL_MAT", "qkv_matmul:q"),
    Rule("Kcur", "MUL_MAT", "qkv_matmul:k"),
    Rule("Vcur", "MUL_MAT", "qkv_matmul:v"),
    Rule("Qcur", "ADD", "qkv_bias:q"),
    Rule("Kcur", "ADD", "qkv_bias:k"),
    Rule("Vcur", "ADD", "qkv_bias:v"),
    Rule("Qcur", "ROPE", "q_post_rope"),
    Rule("Kcur", "ROPE", "k_post_rope"),
    Rule("kq", "MUL_MAT", "attn_scores"),
    Rule("kq_soft_max", "SOFT_MAX", "attn_softmax"),
    Rule("kqv_out", "CONT", "attention"),
    Rule("attn_out", "MUL_MAT", "attn_out"),
    Rule("ffn_inp", "ADD", "post_attn_residual"),
    Rule("ffn_norm", "MUL", "ffn_norm"),
    Rule("ffn_gate", "MUL_MAT", "ffn_gate"),
    Rule("ffn_up", "MUL_MAT", "ffn_up"),
    Rule("ffn_swiglu", "GLU", "ffn_swiglu"),
    Rule("ffn_out", "MUL_MAT", "ffn_out"),
    Rule("l_out", "ADD", "post_ffn_residual"),
    Rule("result_norm", "MUL", "final_norm", per_layer=False),
    Rule("result_output", "MUL_MAT", "lm_head", per_layer=False),
)
#: pv stages some llama.cpp node feeds.
MAPPED = frozenset(r.stage.split(":")[0] for r in RULES)
BY_NODE_NAME: dict[str, list[Rule]] = {}
for _r in RULES:
    BY_NODE_NAME.setdefault(_r.name, []).append(_r)


def split_name(name: str) -> tuple[str, int | None]:
    """``attn_norm-3`` -> (``attn_norm``, 3); ``result_norm`` -> (``result_norm``, None)."""
    base, sep, tail = name.rpartition("-")
    if sep and tail.isdigit():
        return base, int(tail)
    return name, None


def halves_from_pairs(x: np.ndarray) -> np.ndarray:
    """Reorder the last axis (one head's dims) from ggml's pairs to transformers' halves.

    llama.cpp's row ``2i`` / ``2i+1`` of a head is transformers' ``i`` / ``i + D/2``.
    """
    return np.concatenate((x[..., 0::2], x[..., 1::2]), axis=-1)
