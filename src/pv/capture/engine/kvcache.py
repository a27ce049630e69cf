"""The pv engine's KV cache: per layer, the keys (after RoPE) and values of every position so far.

Decoding appends the new tokens' keys and values to the cache, and the new
queries attend to every cached position: query ``j`` of a step that starts at
position ``P`` sits at position ``P + j`` and sees keys ``0 .. P + j`` (and,
with a sliding window, only the last ``window`` of them), through the same
attention path and mask builder as a prefill (``attention.Attention``,
``blocks.allowed``). A prefill from an empty cache is the ordinary forward.

A write can be lost: the ``stale_cache_entry`` bug, planted by the layer's spec
(``cache_writes``), leaves the slot of each new position holding a copy of the
last good entry, and acts only when the cache already holds positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


@dataclass
class KVCache:
    """Per-layer keys (after RoPE) and values, ``[P, KVH, D]`` each, for one sequence."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    length: int = 0  # positions cached in every layer after a completed step

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor, *,
               written: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k/v for ``layer``; returns every cached position's k and v.

        ``written`` False: the write is lost, and each new position's slot repeats
        the last entry already cached (nothing to repeat in an empty cache).
        """
        old_k, old_v = self.keys.get(layer), self.values.get(layer)
        if old_k is None or old_v is None:
            all_k, all_v = k, v
        elif not written and old_k.shape[0] > 0:
            n = k.shape[0]
            all_k = torch.cat((old_k,) + (old_k[-1:],) * n, dim=0)
            all_v = torch.cat((old_v,) + (old_v[-1:],) * n, dim=0)
        else:
            all_k, all_v = torch.cat((old_k, k), dim=0), torch.cat((old_v, v), dim=0)
        self.keys[layer], self.values[layer] = all_k, all_v
        return all_k, all_v

    def truncate(self, length: int) -> None:
        """Back to the first ``length`` positions (a failed step leaves the cache as it was)."""
        for store in (self.keys, self.values):
            for layer in list(store):
                store[layer] = store[layer][:length]
