"""The oracle's logits at long sequences: transformers' head on the last row, the other rows in blocks.

Logits ``[S, V]`` over ``pv.capture.tap.PART_BYTES`` (1.6 GB for SmolLM2 at
8,192 tokens) would be the largest tensor of a forward, on the oracle's side
and in the model's own float32 post-processing. ``BlockedHead`` keeps them
from ever being whole: a forward pre-hook on the model's output embeddings
passes only the last position on, so transformers' forward computes and
post-processes one row (the row the check below reads), and keeps the final
hidden states. ``finish`` then runs that same
``lm_head`` module on blocks of rows (``pv.capture.tap.row_blocks``) and
applies the post-processing the model's config declares (Granite's
``logits_scaling``, a ``final_logit_softcapping``), handing each block to the
capture as a part (provenance ``recomputed``).

The check: the post-processing applied here to the module's output for the
last row must equal, bit for bit, the row transformers itself returned. A
family whose forward does anything else to its logits fails with one line
instead of being compared against a head pv guessed.
"""

from __future__ import annotations

from typing import Any

from pv.capture.oracle.hooks import RECOMPUTED, Capture
from pv.capture.tap import Part
from pv.errors import PvError


class BlockedHead:
    """Installed around one forward whose logits go in ``split``'s blocks (a context manager)."""

    def __init__(self, model: Any, capture: Capture | None, split: list[Part], *, last: bool) -> None:
        self.model, self.capture, self.split, self.last = model, capture, split, last
        self.head = model.get_output_embeddings()
        self.hidden: Any = None
        self._handle: Any = None

    def __enter__(self) -> BlockedHead:  # noqa: PYI034 (a final class)
        def keep_last(module: Any, args: Any) -> Any:
            self.hidden = args[0]
            return (args[0][:, -1:, :], *args[1:])

        self._handle = self.head.register_forward_pre_hook(keep_last)
        if self.capture is not None:
            self.capture.logits_in_blocks = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        if self.capture is not None:
            self.capture.logits_in_blocks = False

    def finish(self, returned: Any) -> Any:
        """The logits (float32 ``[S, V]``, or the last row ``[1, V]`` with ``last``), the blocks handed to the
        capture; ``returned`` is what the model returned for the last position."""
        import torch

        self._handle.remove()  # the calls below are pv's own
        if self.hidden is None:
            raise PvError("the oracle's lm_head never ran: the model computed no logits")
        own = returned.reshape(-1, returned.shape[-1])[-1:]
        mine = self.post(self.head(self.hidden[:, -1:, :]))[0]
        if not torch.equal(mine, own):
            raise PvError("the oracle's logits cannot be computed in blocks: transformers' own last row differs "
                          "from lm_head with the config's scaling; capture fewer tokens")
        hidden = self.hidden  # [1, S, H], as the model hands it to its head
        out = None if self.last else torch.empty(hidden.shape[1], own.shape[-1], dtype=torch.float32,
                                                 device=own.device)
        wanted = self.capture is not None and self.capture.wants("lm_head", None)
        # The last block is always computed: the last row returned is the one every row is (not
        # transformers' own, which a one-row product may round differently).
        for part in self.split if wanted or out is not None else self.split[-1:]:
            block = self.post(self.head(hidden[:, part.lo:part.hi]))[0]
            if out is not None:
                out[part.lo:part.hi] = block.float()
            if wanted and self.capture is not None:
                self.capture.emit("lm_head", None, block, part=part, how=RECOMPUTED)
        self.hidden = None
        return block[-1:].float() if out is None else out

    def post(self, logits: Any) -> Any:
        """What the model's forward does to its head's output, as its config declares it."""
        import torch

        cfg = self.model.config
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        scaling = getattr(cfg, "logits_scaling", None)
        if scaling is not None and scaling != 1:
            logits = logits / scaling
        return logits


__all__ = ["BlockedHead"]
