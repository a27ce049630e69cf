"""Bugs planted inside llama.cpp's compute graph, to prove the llama.cpp capture localises them.

The graph-evaluation callback that captures a node may also rewrite it before
llama.cpp computes the nodes that read it, so the change propagates like a real
bug in llama.cpp (``k_rope_head_zeroed`` even reaches the KV cache). Each fault
names the first pv stage that differs; ``pv bisect --engine llama.cpp`` must
name exactly that stage and layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pv.capture.faults import fault_layer
from pv.errors import PvError


@dataclass(frozen=True)
class LlamaFault:
    """A bug planted inside llama.cpp's graph: a node's values changed in the callback."""

    name: str
    node: str  # ggml base name
    op: str
    stage: str  # the first pv stage that differs
    description: str


LLAMA_FAULTS: dict[str, LlamaFault] = {f.name: f for f in (
    LlamaFault("attn_norm_scaled", "attn_norm", "MUL", "attn_norm",
               "the attention RMSNorm output multiplied by 1.5"),
    LlamaFault("k_rope_head_zeroed", "Kcur", "ROPE", "k_post_rope",
               "key head 0 after RoPE set to zero before it enters the KV cache"),
    LlamaFault("ffn_up_scaled", "ffn_up", "MUL_MAT", "ffn_up",
               "the MLP up projection multiplied by 1.5"),
    # Nodes of the Gemma 3 graph only (the runner refuses them on a graph without the node).
    LlamaFault("post_attn_norm_scaled", "attn_post_norm", "MUL", "post_attn_norm",
               "Gemma's post-attention (sandwich) RMSNorm output multiplied by 1.5"),
    LlamaFault("q_norm_scaled", "Qcur_normed", "MUL", "q_norm",
               "the per-head query RMSNorm output multiplied by 1.5 (Gemma 3, Qwen3)"),
)}


@dataclass(frozen=True)
class LlamaFaultSpec:
    fault: LlamaFault
    layer: int

    @property
    def name(self) -> str:
        return self.fault.name

    def __str__(self) -> str:
        return f"{self.fault.name}@{self.layer}"


def parse_llama_fault(text: str, n_layers: int | None = None) -> LlamaFaultSpec:
    """``name`` or ``name@LAYER`` (default layer 1) from :data:`LLAMA_FAULTS`."""
    name, sep, layer_text = text.strip().partition("@")
    fault = LLAMA_FAULTS.get(name.strip().lower())
    if fault is None:
        raise PvError(f"unknown llama.cpp fault '{name.strip()}'; valid faults: "
                      f"{', '.join(LLAMA_FAULTS)}")
    layer = fault_layer(layer_text, text) if sep else 1
    if n_layers is not None and layer >= n_layers:
        raise PvError(f"fault {fault.name}@{layer}: layer out of range: the model has {n_layers} "
                      f"layers (0..{n_layers - 1})")
    return LlamaFaultSpec(fault, layer)


def apply_fault(spec: LlamaFaultSpec, values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float32, copy=True)
    if spec.fault.name == "k_rope_head_zeroed":
        out[:, 0, :] = 0.0  # [S, KVH, D]
    else:
        out *= 1.5
    return out
