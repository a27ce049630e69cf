"""Which llama.cpp graph node feeds which pv stage, and the layout facts the conversion needs.

Nodes are identified by ggml name (``attn_norm-3``: base name and layer), ggml op
and occurrence, because one name covers several ops (``Qcur-N`` is a MUL_MAT,
a RESHAPE and a ROPE). The table is read by ``pv.capture.llamacpp.runner``; the
``pv import`` mappings for llama.cpp dumps (``pv/mappings/llama.cpp*.yaml``) are
rendered from it by ``pv.capture.llamacpp.mappings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pv.errors import PvError

if TYPE_CHECKING:
    from pv.capture.model.arch import Family


@dataclass(frozen=True)
class Rule:
    """A llama.cpp graph node that feeds a pv stage."""

    name: str  # ggml base name, without the ``-LAYER`` suffix
    op: str  # ggml op name, as ggml_op_name() returns it
    #: pv stage, or a qkv part (``qkv_matmul:q``), or stages the node holds side by side in
    #: equal parts of its last axis (``ffn_gate|ffn_up``: Phi-3's fused up projection).
    stage: str
    per_layer: bool = True
    occurrence: int = 0  # which node of this name and op, in graph order
    #: The node has no name of its own (ggml calls it ``node_N``); it is the one of
    #: this op whose source ``via_src`` is the node named ``name``.
    via_src: int | None = None


_EMBD = Rule("embd", "GET_ROWS", "embedding", per_layer=False)
_ATTN = (
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
)
_QK_NORM = (
    Rule("Qcur_normed", "MUL", "q_norm"),
    Rule("Kcur_normed", "MUL", "k_norm"),
)
#: The output projection: named ``attn_out`` by the llama graph only; elsewhere
#: the unnamed MUL_MAT that reads ``kqv_out``.
_WO_NAMED = Rule("attn_out", "MUL_MAT", "attn_out")
_WO_UNNAMED = Rule("kqv_out", "MUL_MAT", "attn_out", via_src=1)
_DENSE = (
    Rule("ffn_gate", "MUL_MAT", "ffn_gate"),
    Rule("ffn_up", "MUL_MAT", "ffn_up"),
    Rule("ffn_out", "MUL_MAT", "ffn_out"),
)
_MOE = (
    Rule("ffn_moe_logits", "MUL_MAT", "router_logits"),
    Rule("ffn_moe_topk", "VIEW", "moe_experts"),  # int32 indices, best first (ARGSORT descending)
    Rule("ffn_moe_weights_norm", "DIV", "moe_weights"),  # qwen3moe always renormalises
    Rule("ffn_moe_out", "ADD", "moe_out"),
)
_TAIL = (
    Rule("ffn_norm", "MUL", "ffn_norm"),
    Rule("l_out", "ADD", "post_ffn_residual"),
    Rule("result_norm", "MUL", "final_norm", per_layer=False),
    Rule("result_output", "MUL_MAT", "lm_head", per_layer=False),
)
_RESIDUAL = Rule("ffn_inp", "ADD", "post_attn_residual")
_SWIGLU = Rule("ffn_swiglu", "GLU", "ffn_swiglu")


@dataclass(frozen=True)
class Graph:
    """What one llama.cpp model graph (``general.architecture``) exposes."""

    arch: str
    rules: tuple[Rule, ...]
    #: Stages the model has but no node of this graph holds, and why.
    not_exposed: dict[str, str]
    #: Q/K rows permuted by the GGUF converter (RoPE on adjacent pairs, not halves).
    pairs: bool = False
    #: The graph applies the family's sliding windows (the llama graph runs Mistral
    #: with a plain causal mask: it reads no window from the GGUF).
    windows: bool = False
    #: Q is scaled before ``kq`` (Gemma): the softmax op's own scale is 1, so ``kq``
    #: already holds the scaled scores. Elsewhere ``kq`` is unscaled.
    q_scaled: bool = False
    #: Named nodes the graph has besides those its rules read (a dump of this graph
    #: holds them, so they never mark a dump as another graph's).
    other_nodes: tuple[str, ...] = ()
    #: Names whose last node (what a dump keyed by name alone holds) is not the op a rule
    #: reads: Phi-3 scales ``Qcur`` after its ROPE.
    last_ops: Mapping[str, str] = field(default_factory=dict)

    @property
    def mapped(self) -> frozenset[str]:
        """pv stages some node of this graph feeds."""
        return frozenset(s for r in self.rules for s in stages_of(r))

    def by_name(self) -> dict[str, list[Rule]]:
        out: dict[str, list[Rule]] = {}
        for r in self.rules:
            if r.via_src is None:
                out.setdefault(r.name, []).append(r)
        return out

    def by_source(self) -> dict[str, list[Rule]]:
        out: dict[str, list[Rule]] = {}
        for r in self.rules:
            if r.via_src is not None:
                out.setdefault(r.name, []).append(r)
        return out


_FUSED = "llama.cpp computes the activation and the product in one fused {} op"

GRAPHS: dict[str, Graph] = {g.arch: g for g in (
    Graph("llama", (_EMBD, *_ATTN, _WO_NAMED, _RESIDUAL, *_DENSE, _SWIGLU, *_TAIL),
          {"ffn_silu": _FUSED.format("SWIGLU")}, pairs=True),
    Graph("qwen2", (_EMBD, *_ATTN, _WO_UNNAMED, _RESIDUAL, *_DENSE, _SWIGLU, *_TAIL),
          {"ffn_silu": _FUSED.format("SWIGLU")}),
    Graph("qwen3", (_EMBD, *_ATTN, *_QK_NORM, _WO_UNNAMED, _RESIDUAL, *_DENSE, _SWIGLU, *_TAIL),
          {"ffn_silu": _FUSED.format("SWIGLU")}),
    Graph("qwen3moe", (_EMBD, *_ATTN, *_QK_NORM, _WO_UNNAMED, _RESIDUAL, *_MOE, *_TAIL), {}),
    Graph("gemma3", (
        # The embedding pv compares is the scaled one: ``embd`` times sqrt(H) is ``inp_scaled``.
        Rule("inp_scaled", "SCALE", "embedding", per_layer=False),
        *_ATTN, *_QK_NORM, _WO_UNNAMED,
        Rule("attn_post_norm", "MUL", "post_attn_norm"),
        Rule("sa_out", "ADD", "post_attn_residual"),
        *_DENSE,
        Rule("ffn_geglu", "GLU", "ffn_swiglu"),
        Rule("ffn_post_norm", "MUL", "post_ffn_norm"),
        *_TAIL), {"ffn_silu": _FUSED.format("GEGLU")}, windows=True, q_scaled=True,
        other_nodes=("embd",)),
    # Granite: the llama graph with its four scalings. The embedding pv compares is the scaled
    # row (``embd`` is the SCALE of an unnamed GET_ROWS), lm_head the logits after the division
    # (``result_output`` is the SCALE of an unnamed MUL_MAT); the residual scalings are unnamed
    # SCALEs between ``attn_out``/``ffn_out`` and the ADDs pv reads; ``kq``'s scale is the
    # softmax op's, attention_multiplier.
    Graph("granite", (
        Rule("embd", "SCALE", "embedding", per_layer=False),
        *_ATTN, _WO_NAMED, _RESIDUAL, *_DENSE, _SWIGLU, *_TAIL[:-1],
        Rule("result_output", "SCALE", "lm_head", per_layer=False)),
        {"ffn_silu": _FUSED.format("SWIGLU")}, pairs=True),
    # Phi-3: q|k|v from one MUL_MAT (``wqkv``), gate|up from one (``ffn_up``, twice I wide,
    # split in halves), Q scaled by 1/sqrt(D) before ``kq`` as in Gemma's graph, the output
    # projection unnamed as in qwen2's.
    Graph("phi3", (
        _EMBD, _ATTN[0], Rule("wqkv", "MUL_MAT", "qkv_matmul"), *_ATTN[7:], _WO_UNNAMED,
        Rule("ffn_up", "MUL_MAT", "ffn_gate|ffn_up"), _SWIGLU, _DENSE[2], *_TAIL),
        {"ffn_silu": _FUSED.format("SWIGLU"),
         "post_attn_residual": "llama.cpp's phi3 graph leaves the attention residual's ADD unnamed"},
        q_scaled=True, other_nodes=("Vcur",), last_ops={"Qcur": "SCALE"}),
)}

#: llama.cpp runs Mixtral's GGUF (``llama`` with an expert count) in its llama graph,
#: whose MoE branch names its nodes as qwen3moe's does (weights always renormalised).
LLAMA_MOE = Graph("llama", (_EMBD, *_ATTN, _WO_NAMED, _RESIDUAL, *_MOE, *_TAIL), {}, pairs=True)

#: Node table name -> table: every llama.cpp graph by its architecture, and the llama
#: graph's MoE branch as ``mixtral``. A family's row names its table (``Family.llamacpp_graph``,
#: by default its ``gguf_arch``).
TABLES: dict[str, Graph] = {**GRAPHS, "mixtral": LLAMA_MOE}


def graph_for(family: Family) -> Graph:
    """The llama.cpp node table a family's GGUF runs in (its row names it)."""
    key = family.llamacpp_graph or family.gguf_arch
    graph = TABLES.get(key) if key else None
    if graph is None:
        raise PvError(f"--engine llama.cpp has no node table for family {family.name}; "
                      f"it maps {', '.join(GRAPHS)}")
    return graph


def stages_of(rule: Rule) -> tuple[str, ...]:
    """The pv stages a rule's node feeds (one, or several side by side)."""
    return tuple(rule.stage.partition(":")[0].split("|"))


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
