"""From llama.cpp's graph nodes to pv's stages: layouts, the q|k|v row, the score scale, the KV cells.

The runner copies a node's values inside the evaluation callback; this module
turns them into the stage table's canonical layout and hands them to the tap:
Q and K from ggml's pair order into halves (the llama graph only, whose
converter permuted Wq/Wk), the three projections joined into one ``q|k|v``
row, ``kq`` times the softmax op's own scale and cut to the cells that hold
this sequence, and every other node reshaped to ``[S, ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pv.capture.faults import FaultSpec
from pv.capture.llamacpp.nodes import Graph, Rule, halves_from_pairs
from pv.capture.model.config import ModelConfig
from pv.capture.tap import InOrder
from pv.errors import PvError


@dataclass
class Pass:
    """State of one llama_decode call: where it starts, what it feeds, what came out."""

    tap: InOrder
    pos0: int
    n_tokens: int
    fault: FaultSpec | None
    seen: dict[tuple[str, str], int] = field(default_factory=dict)
    parts: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    kq: dict[int, np.ndarray] = field(default_factory=dict)
    error: BaseException | None = None
    names: list[str] = field(default_factory=list)


#: Stages whose node is already [S, ...] in pv's layout once reshaped.
_AS_ROWS = frozenset({
    "embedding", "attn_norm", "qkv_matmul", "qkv_bias", "attention", "attn_out", "post_attn_norm",
    "post_attn_residual", "ffn_norm", "ffn_gate", "ffn_up", "ffn_swiglu", "ffn_out", "router_logits",
    "moe_experts", "moe_weights", "moe_out", "post_ffn_norm", "post_ffn_residual", "final_norm", "lm_head",
})


@dataclass(frozen=True)
class Converter:
    """One model's conversions (its head size, its graph's pair order and windows)."""

    config: ModelConfig
    graph: Graph

    def emit(self, rule: Rule, layer: int | None, node: str, op_params: bytes, values: np.ndarray,
             state: Pass) -> None:
        """Hand node ``node``'s ``values`` (row-major, ggml dims reversed) to the pass's tap as pv's stage."""
        import torch

        tap, cfg = state.tap, self.config
        s = state.n_tokens
        stage, _, part = rule.stage.partition(":")

        def send(name: str, arr: np.ndarray, **meta: Any) -> None:
            key_layer = 0 if name == "embedding" else layer
            if tap.wants(name, key_layer):
                meta.setdefault("dtype_captured", "float32")
                meta.setdefault("source", f"llama.cpp {node} {rule.op}")
                tap(name, key_layer, torch.from_numpy(np.ascontiguousarray(arr)), **meta)

        pairs = self.graph.pairs
        if part:  # one of q|k|v: emit the fused row once all three are in
            assert layer is not None
            d = cfg.head_dim
            arr = values.reshape(s, -1)
            if part in "qk" and pairs:
                arr = halves_from_pairs(arr.reshape(s, -1, d)).reshape(s, -1)
            slot = state.parts.setdefault((stage, layer), {})
            slot[part] = arr
            if len(slot) == 3:
                del state.parts[(stage, layer)]
                send(stage, np.concatenate([slot["q"], slot["k"], slot["v"]], axis=-1),
                     source=f"llama.cpp Qcur|Kcur|Vcur-{layer} {rule.op}")
            return
        if stage in ("q_norm", "k_norm", "q_post_rope", "k_post_rope"):
            heads = values.reshape(s, -1, cfg.head_dim)
            send(stage, halves_from_pairs(heads) if pairs else heads)
            return
        if stage == "attn_scores":
            assert layer is not None
            state.kq[layer] = values  # scaled once the softmax op says by how much
            return
        if stage == "attn_softmax":
            assert layer is not None
            cells = state.pos0 + s  # cells 0..pos0+s-1 hold this sequence's positions
            if cells > values.shape[-1]:
                raise PvError(f"layer {layer}: {cells} positions but llama.cpp's KV cache shows "
                              f"{values.shape[-1]} cells; pv reads attention only while every "
                              f"position has its own cell")
            window = cfg.layer_window(layer) if self.graph.windows else None
            mask: dict[str, Any] = {"mask": f"sliding_window:{window}"} if window is not None else {}
            kq = state.kq.pop(layer, None)
            if kq is not None:
                scale = float(np.frombuffer(op_params[:4], dtype="<f4")[0])
                send("attn_scores", kq.reshape(-1, s, kq.shape[-1])[:, :, :cells] * np.float32(scale),
                     source=f"llama.cpp kq-{layer} MUL_MAT, times the softmax scale {scale:.6g}, "
                            f"{cells} of {kq.shape[-1]} KV cells", **mask)
            send("attn_softmax", values.reshape(-1, s, values.shape[-1])[:, :, :cells],
                 source=f"llama.cpp {node} SOFT_MAX, {cells} of {values.shape[-1]} KV cells",
                 **mask)
            return
        if "|" in stage:  # stages side by side in one node (Phi-3's gate|up)
            names = stage.split("|")
            for name, piece in zip(names, np.split(values.reshape(s, -1), len(names), axis=-1), strict=True):
                send(name, piece)
            return
        if stage in _AS_ROWS:
            send(stage, values.reshape(s, -1))
            return
        raise PvError(f"no conversion for llama.cpp stage {stage}")  # pragma: no cover
