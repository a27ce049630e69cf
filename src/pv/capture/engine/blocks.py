"""Arithmetic the engine shares between families: RoPE frequencies, masks, the MoE block.

Kept apart from ``engine.py`` so the forward there reads as the sequence of
steps; each function here follows transformers' formula for the same thing
(named in its docstring) so that engine and oracle differ only in rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


def inverse_frequencies(head_dim: int, theta: float, device: Any,
                        scaling: Mapping[str, Any] | None = None,
                        factors: tuple[float, ...] | None = None) -> torch.Tensor:
    """RoPE inverse frequencies in float32, with llama3/linear scaling or per-frequency divisors.

    Plain: ``1 / theta^(2i/D)`` computed as transformers does (int64 arange cast to
    float32). ``linear`` divides by ``factor``; ``llama3`` divides the low
    frequencies by ``factor``, keeps the high ones and blends the band between
    (``_compute_llama3_parameters``); ``factors`` (GGUF ``rope_freqs``) divide
    frequency i by ``factors[i]`` as llama.cpp does.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv = 1.0 / (theta ** exponents)
    if factors is not None:
        inv = inv / torch.tensor(factors, dtype=torch.float32, device=device)
    if scaling is None:
        return inv
    kind = scaling.get("rope_type", "default")
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    if kind != "llama3":
        return inv
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def llama3_factors(head_dim: int, theta: float, scaling: Mapping[str, Any]) -> tuple[float, ...]:
    """The per-frequency divisors that turn plain RoPE into llama3-scaled RoPE (GGUF ``rope_freqs``)."""
    plain = inverse_frequencies(head_dim, theta, "cpu")
    scaled = inverse_frequencies(head_dim, theta, "cpu", scaling)
    return tuple(float(x) for x in (plain / scaled).tolist())


def allowed_keys(seq_len: int, window: int | None, device: Any, offset: int = 0) -> torch.Tensor:
    """[S, S] bool: key k is visible to query q when k <= q (+offset) and, with a window, k > q - window."""
    q = torch.arange(seq_len, device=device)[:, None]
    k = torch.arange(seq_len, device=device)[None, :]
    allowed = k <= q + offset
    if window is not None:
        allowed = allowed & (k > q - window)
    return allowed


def activation(name: str, exact_gelu: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """SiLU, or the tanh-approximated GELU of GeGLU (exact GELU only for the fault that uses it)."""
    F = torch.nn.functional
    if name == "gelu_tanh":
        if exact_gelu:
            return lambda x: F.gelu(x)
        return lambda x: F.gelu(x, approximate="tanh")
    return F.silu


def moe(h: torch.Tensor, x: torch.Tensor, router: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
        top_k: int, norm_topk: bool, act: Callable[[torch.Tensor], torch.Tensor], layer: int,
        tap: Any, fault: str | None, weights_float32: bool = False) -> torch.Tensor:
    """Top-k routed SwiGLU experts, transformers' Qwen3-MoE and Mixtral order of operations.

    ``h`` [S, H] is the normed input, ``x`` the residual (read only by the
    ``router_unnormed_input`` fault). Router logits, softmax in float32, top-k
    (best first), optional renormalisation, back to the compute dtype (Qwen3-MoE;
    with ``weights_float32`` they stay float32, as Mixtral's do, and each expert's
    output is scaled in float32 before the cast back); then each expert that any
    token chose, in ascending expert order, adds ``weight * down(act(gate) * up)``
    for its tokens.
    """
    F = torch.nn.functional
    logits = F.linear(x if fault == "router_unnormed_input" else h, router)
    if tap is not None and tap.wants("router_logits", layer):
        tap("router_logits", layer, logits)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    weights, chosen = torch.topk(probs, top_k, dim=-1, largest=fault != "moe_topk_smallest")
    if norm_topk and fault != "moe_weights_not_renormalised":
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if not weights_float32:
        weights = weights.to(logits.dtype)
    if tap is not None and tap.wants("moe_experts", layer):
        tap("moe_experts", layer, chosen.to(torch.float32))
    if tap is not None and tap.wants("moe_weights", layer):
        tap("moe_weights", layer, weights)
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
        if fault != "moe_weights_unapplied":
            y = y * weights[token, slot, None]
        out.index_add_(0, token, y.to(out.dtype))
    return out
