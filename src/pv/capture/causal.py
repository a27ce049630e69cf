"""A block of query rows computed over the keys it can see: the causal half of a long attention matrix.

A block of query rows at positions up to ``P + hi - 1`` (``P`` cached keys)
sees keys ``0 .. P + hi - 1`` only (``seen``); every later key is masked. Where
a runner computes the matrices beside its output (pv's engine on a causal
prefill or decode step, the oracle on a layer without a sliding window), it
forms ``q·kᵀ·scale`` and the softmax over those ``seen`` keys only and writes 0
as the probability of every later key, which is what the masked softmax gives
them: on average half the product and half the softmax of a prefill. The
scores of the masked keys are computed too only when the tap reads them
(a capture file holds them; ``skips_masked`` taps, which compare under the
causal rule, never read them and get 0). Both ways the seen part is the same
arithmetic, so a streamed comparison and the files of ``--keep`` hold the same
values wherever either is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def skips_masked(tap: Any) -> bool:
    """Whether ``tap`` never reads the attention values the causal mask hides (default: it reads them)."""
    return bool(getattr(tap, "skips_masked", False))


def visible(keys: int, queries: int, hi: int) -> int:
    """Keys the block of query rows ending at row ``hi`` (of ``queries``, the last ``queries`` of
    ``keys`` positions) can see."""
    return min(keys, keys - queries + hi)


def scores(q: torch.Tensor, k: torch.Tensor, scale: float, seen: int, *, whole: bool,
           rest: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(q·kᵀ·scale over every key, or None unless whole; the same over the first seen keys)``;
    ``rest``: the later keys' scores are computed (else 0)."""
    import torch

    left = torch.matmul(q, k[:seen].transpose(-1, -2)).mul_(scale)
    if not whole or seen >= k.shape[0]:
        return (left if whole else None), left
    full = left.new_empty((q.shape[0], k.shape[0]))
    full[:, :seen] = left
    if rest:
        full[:, seen:] = torch.matmul(q, k[seen:].transpose(-1, -2)).mul_(scale)
    else:
        full[:, seen:] = 0.0
    return full, left


def spread(probs: torch.Tensor, keys: int) -> torch.Tensor:
    """The probabilities of the seen keys, and 0 for every later key: ``[rows, keys]``."""
    out = probs.new_zeros((probs.shape[0], keys))
    out[:, :probs.shape[1]] = probs
    return out


__all__ = ["scores", "skips_masked", "spread", "visible"]
