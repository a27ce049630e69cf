"""Arithmetic the engine shares between families: RoPE rotations, the mask, the MoE block.

Kept apart from ``engine.py`` so the forward there reads as the sequence of
steps; each function here follows transformers' formula for the same thing
(named in its docstring) so that engine and oracle differ only in rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


def allowed(q_len: int, k_len: int, window: int | None, device: Any, offset: int = 0) -> torch.Tensor:
    """[S, P + S] bool, the one mask builder: query j sits at position p = P + j (P = k_len - q_len
    cached positions) and sees key k when k <= p + offset and, with a window, k > p - window.

    ``offset`` is 0 for a causal mask; a planted fault moves it (+1: one future key
    visible, -1: a query no longer sees its own key). A prefill is the square case.
    """
    qpos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    kpos = torch.arange(k_len, device=device)[None, :]
    ok = kpos <= qpos + offset
    if window is not None:
        ok = ok & (kpos > qpos - window)
    return ok


def rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the two halves of each head (NeoX style, as transformers does): x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on adjacent pairs (GPT-J style) with each pair's frequency: the ``rope_interleaved`` bug."""
    half = x.shape[-1] // 2
    pairs = x.view(*x.shape[:-1], half, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[..., :half], sin[..., :half]
    return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)


def activation(name: str, exact_gelu: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """SiLU, or the tanh-approximated GELU of GeGLU (``exact_gelu``: the erf GELU of the ``gelu_exact`` bug)."""
    F = torch.nn.functional
    if name == "gelu_tanh":
        if exact_gelu:
            return lambda x: F.gelu(x)
        return lambda x: F.gelu(x, approximate="tanh")
    return F.silu


@dataclass(frozen=True)
class Routing:
    """How a MoE block routes, as the equations say; a planted fault changes one choice."""

    #: The router reads the residual stream instead of the normed input.
    reads_residual: bool = False
    #: Top-k takes the most likely experts (False: the least likely).
    largest: bool = True
    #: The chosen weights are renormalised where the family does (``norm_topk_prob``).
    renormalise: bool = True
    #: Each expert's output is scaled by its routing weight.
    weighted: bool = True


def moe(h: torch.Tensor, x: torch.Tensor, router: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
        top_k: int, norm_topk: bool, act: Callable[[torch.Tensor], torch.Tensor], layer: int,
        point: Any, routing: Routing = Routing(), weights_float32: bool = False) -> torch.Tensor:
    """Top-k routed SwiGLU experts, transformers' Qwen3-MoE and Mixtral order of operations.

    ``h`` [S, H] is the normed input, ``x`` the residual. Router logits, softmax
    in float32, top-k (best first), optional renormalisation, back to the compute
    dtype (Qwen3-MoE; with ``weights_float32`` they stay float32, as Mixtral's do,
    and each expert's output is scaled in float32 before the cast back); then
    each expert that any token chose, in ascending expert order, adds
    ``weight * down(act(gate) * up)`` for its tokens. ``point`` is the forward's
    capture point (``pv.capture.engine.layers.Points``).
    """
    F = torch.nn.functional
    logits = point("router_logits", layer, F.linear(x if routing.reads_residual else h, router))
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    weights, chosen = torch.topk(probs, top_k, dim=-1, largest=routing.largest)
    if norm_topk and routing.renormalise:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if not weights_float32:
        weights = weights.to(logits.dtype)
    if point.wants("moe_experts", layer):
        point("moe_experts", layer, chosen.to(torch.float32))
    weights = point("moe_weights", layer, weights)
    out = torch.zeros_like(h)
    n_experts = router.shape[0]
    hit = torch.zeros(n_experts, dtype=torch.bool, device=h.device)
    hit[chosen.reshape(-1)] = True
    inter = gate_up.shape[1] // 2
    for e in hit.nonzero().flatten().tolist():
        token, slot = torch.where(chosen == e)
        order = torch.argsort(slot * chosen.shape[0] + token)  # transformers: by slot, then token
        token, slot = token[order], slot[order]
        gu = F.linear(h[token], gate_up[e])
        y = F.linear(act(gu[:, :inter]) * gu[:, inter:], down[e])
        if routing.weighted:
            y = y * weights[token, slot, None]
        out.index_add_(0, token, y.to(out.dtype))
    return out
