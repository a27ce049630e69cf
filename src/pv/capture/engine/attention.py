"""The engine's attention: causal (or sliding-window) GQA, q [S, NH, D], k/v [S, KVH, D] -> [S, NH*D].

Why it is built this way:

- **The output always comes from one kernel.** ``scaled_dot_product_attention``
  with 4-D inputs and ``is_causal`` (an explicit boolean mask on a
  sliding-window layer); on the CPU that is the fused (flash) kernel, which
  never materialises [NH, S, S].
- **Capture is additive.** The [NH, S, S] score and probability matrices are
  computed *beside* that kernel, with the eager formula transformers uses
  (``q.kᵀ·scale``, masked, float32 softmax), only when ``attn_scores`` or
  ``attn_softmax`` is asked for, and never fed forward; the manifest marks them
  ``provenance: recomputed``.
- **Faults** that change the attention arithmetic (``ATTENTION_FAULTS``) switch
  the faulted layer to the explicit path, whose matrices are then the ones
  actually used (``observed``).
- **Decode steps** (queries over a KV cache) go to ``kvcache.attention``, which
  follows the same rules with a rectangular mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pv.capture.engine import blocks, kvcache
from pv.capture.faults import ATTENTION_FAULTS
from pv.capture.model.config import ModelConfig
from pv.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")


class Attention:
    """One model's attention: its GQA head mapping, its scale and the SDPA kernel torch picked."""

    def __init__(self, config: ModelConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        group = config.num_attention_heads // config.num_key_value_heads
        #: Query head h reads kv head h // (NH/KVH); the ``gqa_head_mapping`` fault reads h % KVH.
        self.kv_of = torch.arange(config.num_attention_heads, device=device) // group
        self.kv_of_faulty = torch.arange(config.num_attention_heads, device=device) % config.num_key_value_heads
        #: The SDPA backend of the first forward (or of ``probe``); ``None`` until one has run.
        self.backend: str | None = None

    def __call__(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fault: str | None, tap: Any,
                 window: int | None = None, *, cached: bool = False) -> torch.Tensor:
        """Layer ``i``'s attention; ``cached``: a decode step, k/v hold every cached position."""
        s, nh, d = q.shape
        qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        want_scores = tap is not None and tap.wants("attn_scores", i)
        want_probs = tap is not None and tap.wants("attn_softmax", i)
        if fault == "sliding_window_ignored":
            window = None
        if cached:
            return kvcache.attention(self, i, q, k, v, fault, tap, window)
        if fault in ATTENTION_FAULTS:
            return self.explicit(i, qh, kh, vh, fault, tap, want_scores, want_probs, True, window)
        # 4-D inputs: on the CPU that selects the fused (flash) kernel, which never
        # materialises [NH, S, S]; 3-D inputs would fall back to the math kernel.
        mask = None if window is None or window >= s else blocks.allowed_keys(s, window, qh.device)
        args = (qh[None], kh[None], vh[None], mask, 0.0, mask is None)
        if self.backend is None:
            self.backend = sdpa_backend(*args, scale=self.config.attention_scale,
                                        enable_gqa=nh != kh.shape[0])
        out = torch.nn.functional.scaled_dot_product_attention(
            *args, scale=self.config.attention_scale, enable_gqa=nh != kh.shape[0],
        )[0]
        if want_scores or want_probs:
            # Capture only: the same scores the eager formula gives, never fed forward.
            self.explicit(i, qh, kh, vh, None, tap, want_scores, want_probs, False, window)
        return out.transpose(0, 1).reshape(s, nh * d)

    def explicit(self, i: int, qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor,
                 fault: str | None, tap: Any, want_scores: bool, want_probs: bool,
                 used: bool, window: int | None = None) -> torch.Tensor:
        """Materialised [NH, S, S] scores and probabilities (eager math, float32 softmax).

        ``used``: the result is the layer's output (a fault's path); otherwise the
        matrices are only captured and the return value is discarded.
        """
        nh, s, d = qh.shape
        meta: dict[str, Any] = {} if used else {"provenance": "recomputed"}
        if window is not None:
            meta["mask"] = f"sliding_window:{window}"
        kv_of = self.kv_of_faulty if fault == "gqa_head_mapping" else self.kv_of
        k_rep = kh.index_select(0, kv_of)
        scale = 1.0 / d if fault == "score_scale_1_over_d" else self.config.attention_scale
        scores = torch.matmul(qh, k_rep.transpose(-1, -2)) * scale
        if want_scores:
            tap("attn_scores", i, scores, **meta)
        if not (used or want_probs):
            return scores
        offset = 1 if fault == "mask_off_by_one" else 0
        allowed = blocks.allowed_keys(s, window, scores.device, offset)
        masked = scores.masked_fill(~allowed, float("-inf"))
        axis = -2 if fault == "softmax_wrong_axis" else -1
        probs = torch.softmax(masked, dim=axis, dtype=torch.float32).to(qh.dtype)
        if want_probs:
            tap("attn_softmax", i, probs, **meta)
        if not used:
            return probs
        v_rep = vh.index_select(0, kv_of)
        out = torch.matmul(probs, v_rep)
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
        mask = None if window is None else blocks.allowed_keys(s, window, self.device)
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
