"""The engine's attention: causal (or sliding-window) GQA over the new tokens and every cached key.

q [S, NH, D] at positions P .. P + S - 1, k/v [P + S, KVH, D] -> [S, NH*D]; a
prefill is P = 0. Why it is built this way:

- **The output comes from one kernel.** ``scaled_dot_product_attention`` with
  4-D inputs: in a prefill with ``is_causal`` (an explicit boolean mask on a
  sliding-window layer), which on the CPU is the fused (flash) kernel that
  never materialises [NH, S, S]; at a decode step with the explicit mask of
  ``blocks.allowed``, the one mask builder.
- **One explicit path, given the mask.** The score and probability matrices
  (``q·kᵀ·scale``, masked, float32 softmax: transformers' eager formula) come
  from ``explicit``, in a prefill and at a decode step alike. When they are
  asked for they are computed beside the kernel and never fed forward
  (``provenance: recomputed``), so capture is additive; when a planted fault
  changes the arithmetic (head mapping, scale, mask, softmax axis: the layer's
  ``Heads``), the layer runs on this path and its matrices are the ones used.
- A sliding-window layer's matrices record their window (``mask:
  sliding_window:W``) in a prefill and at a decode step alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pv.capture import causal
from pv.capture.engine import blocks
from pv.capture.engine.layers import Heads, Points
from pv.capture.model.config import ModelConfig
from pv.capture.tap import Part, parts
from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


class Attention:
    """One model's attention: its scale and the SDPA kernel torch picked."""

    def __init__(self, config: ModelConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        #: The SDPA backend of the first prefill (or of ``probe``); ``None`` until one has run.
        self.backend: str | None = None

    def __call__(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: Heads,
                 point: Points, past: int = 0) -> torch.Tensor:
        """Layer ``i``'s attention of the queries at positions ``past ..`` over every key in ``k``."""
        s, nh, d = q.shape
        qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        step = heads.decode if past > 0 else heads.prefill
        window, n_keys = heads.window, kh.shape[1]
        want_scores, want_probs = point.wants("attn_scores", i), point.wants("attn_softmax", i)
        if step.explicit:
            rule = blocks.allowed(s, n_keys, window, qh.device, step.offset)
            return self.explicit(i, qh, kh, vh, heads, rule, point, want_scores, want_probs, used=True)
        mask: torch.Tensor | None = None  # a prefill without a narrower window: is_causal
        if past > 0 or (window is not None and window < s):
            mask = blocks.allowed(s, n_keys, window, qh.device, step.offset)
        # 4-D inputs: 3-D ones would fall back to the math kernel.
        args = (qh[None], kh[None], vh[None], mask, 0.0, mask is None)
        gqa = nh != kh.shape[0]
        if self.backend is None and past == 0:
            self.backend = sdpa_backend(*args, scale=self.config.attention_scale, enable_gqa=gqa)
        out = torch.nn.functional.scaled_dot_product_attention(
            *args, scale=self.config.attention_scale, enable_gqa=gqa)[0]
        if want_scores or want_probs:  # capture only: the eager formula's matrices, never fed forward
            full = mask if mask is not None else blocks.allowed(s, s, window, qh.device, step.offset)
            self.explicit(i, qh, kh, vh, heads, full, point, want_scores, want_probs, used=False)
        return out.transpose(0, 1).reshape(s, nh * d)

    def explicit(self, i: int, qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, heads: Heads,
                 mask: torch.Tensor, point: Points, want_scores: bool, want_probs: bool, *,
                 used: bool) -> torch.Tensor:
        """Materialised [NH, S, P + S] scores and probabilities under ``mask`` (eager math, float32 softmax).

        ``used``: the result is the layer's output; otherwise the matrices are
        only captured and the return value is discarded.
        """
        nh, s, d = qh.shape
        meta: dict[str, Any] = {} if used else {"provenance": "recomputed"}
        if heads.window is not None:
            meta["mask"] = f"sliding_window:{heads.window}"
        split = parts(nh, s, kh.shape[1], whole_heads=heads.axis != -1) if heads.axis in (-1, -2) else None
        if split is not None:
            return self._in_parts(i, qh, kh, vh, heads, mask, point, (want_scores, want_probs, used), meta, split)
        k_rep = kh.index_select(0, heads.kv_of)
        scores = torch.matmul(qh, k_rep.transpose(-1, -2)) * heads.scale
        if want_scores:
            point("attn_scores", i, scores, **meta)
        if not (used or want_probs):
            return scores
        masked = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(masked, dim=heads.axis, dtype=torch.float32).to(qh.dtype)
        if want_probs:
            point("attn_softmax", i, probs, **meta)
        if not used:
            return probs
        out = torch.matmul(probs, vh.index_select(0, heads.kv_of))
        return out.transpose(0, 1).reshape(s, nh * d)

    def _in_parts(self, i: int, qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, heads: Heads,
                  mask: torch.Tensor, point: Points, wanted: tuple[bool, bool, bool], meta: dict[str, Any],
                  split: list[Part]) -> torch.Tensor:
        """``explicit`` a block of query rows of one head at a time, each block's matrices handed over as
        a part as soon as they exist, so a layer never holds [NH, S, P + S] (``pv.capture.tap.parts``).
        ``wanted``: scores, probabilities, and whether the output is used."""
        want_scores, want_probs, used = wanted
        nh, s, d = qh.shape
        n_keys = kh.shape[1]
        kv_of = [int(x) for x in heads.kv_of.tolist()]
        out = torch.empty_like(qh) if used else None
        hidden = ~mask
        # Matrices beside the kernel, under the true causal mask: the keys each block sees only.
        seeing, rest = not used and heads.axis == -1, not causal.skips_masked(point.tap)
        # Each block is handed over last, as the tap's own (``own``): nothing here reads it afterwards.
        for part in split:
            h, rows = part.head, slice(part.lo, part.hi)
            seen = causal.visible(n_keys, s, part.hi) if seeing else n_keys
            scores, left = causal.scores(qh[h, rows], kh[kv_of[h]], heads.scale, seen, whole=want_scores or not seeing,
                                         rest=rest)
            masked = left.masked_fill(hidden[rows, :seen], float("-inf")) if used or want_probs else None
            if want_scores and scores is not None:
                point("attn_scores", i, scores[None], part=part, own=True, **meta)
            del scores, left
            if masked is None:
                continue
            probs = torch.softmax(masked, dim=heads.axis, dtype=torch.float32).to(qh.dtype)
            if seen < n_keys:
                probs = causal.spread(probs, n_keys)
            del masked
            if out is not None:
                out[h, rows] = torch.matmul(probs, vh[kv_of[h]])
            if want_probs:
                point("attn_softmax", i, probs[None], part=part, own=True, **meta)
        if out is None:
            return qh  # discarded: the matrices were only captured
        return out.transpose(0, 1).reshape(s, nh * d)

    def probe(self, dtype: torch.dtype, windows: list[int | None]) -> str:
        """The backend torch picks for an 8-token input of this model (the rule the forward goes through).

        ``windows``: each layer's sliding window. Run it under the forward's
        numerics (TF32 setting); the answer is kept as ``backend``.
        """
        cfg, s = self.config, 8
        q = torch.zeros(1, cfg.num_attention_heads, s, cfg.head_dim, dtype=dtype, device=self.device)
        kv = torch.zeros(1, cfg.num_key_value_heads, s, cfg.head_dim, dtype=dtype, device=self.device)
        window = next((w for w in windows if w is not None and w < s), None)
        mask = None if window is None else blocks.allowed(s, s, window, self.device)
        self.backend = sdpa_backend(q, kv, kv, mask, 0.0, mask is None,
                                    scale=cfg.attention_scale, enable_gqa=q.shape[1] != kv.shape[1])
        return self.backend


def sdpa_backend(*args: Any, scale: float, enable_gqa: bool) -> str:
    """The name of the SDPA kernel torch picks for these inputs (torch's own dispatch rule)."""
    from torch.nn.attention import SDPBackend

    names = {int(getattr(SDPBackend, n)): n.lower() for n in dir(SDPBackend) if n.isupper()}
    try:
        choice = int(torch._fused_sdp_choice(*args, scale=scale, enable_gqa=enable_gqa))
    except (AttributeError, RuntimeError, TypeError):  # private API: absent or changed
        return "unknown"
    return names.get(choice, f"backend {choice}")
