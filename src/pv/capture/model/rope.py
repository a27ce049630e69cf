"""RoPE frequencies as a model's config defines them: plain, llama3- or linear-scaled, or divided by
a GGUF file's per-frequency factors.

The engine rotates with them; the GGUF writer stores llama3 scaling as the
per-frequency divisors llama.cpp reads (``rope_freqs``). Both follow
transformers' formula (``_compute_llama3_parameters``), in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
