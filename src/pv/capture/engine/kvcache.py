"""The pv engine's KV cache, attention over it, and the bugs that only show when decoding.

Decoding appends the new tokens' keys (after RoPE) and values to a per-layer
cache and lets the new queries attend to every cached position: query ``j`` of
a step that starts at position ``P`` sits at position ``P + j`` and sees keys
``0 .. P + j`` (and, with a sliding window, only the last ``window`` of them).
Scores and probabilities of a decode step are ``[NH, S_new, P + S_new]``; a
prefill from an empty cache is the ordinary square case and takes exactly the
same path as a forward without a cache.

The decode-only fault catalogue (a prefill is untouched by each of them, a
test pins it) plants the three classic cache bugs:

- ``rope_position_ignores_cache``: the new token is rotated as if it stood at
  position 0 of its step instead of ``P`` (the cache offset is forgotten);
- ``stale_cache_entry``: the new key/value is never written, so the slot of the
  newest position holds a stale copy of the previous position's entry;
- ``mask_off_by_one_decode``: the decode mask hides the newest key from its own
  query (``k < P + j`` instead of ``k <= P + j``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pv.capture.faults import DEFAULT_LAYER, Fault, FaultSpec, fault_layer, parse_fault

if TYPE_CHECKING:
    from pv.capture.engine.attention import Attention

DECODE_FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("rope_position_ignores_cache", "q_post_rope",
          "at decode, RoPE rotates the new token as if at position 0 (ignores the cache offset)"),
    Fault("stale_cache_entry", "attn_scores",
          "at decode, the new key/value is never written: the newest slot holds a stale copy "
          "of the previous position's entry"),
    Fault("mask_off_by_one_decode", "attn_softmax",
          "at decode, the mask hides the newest key from its own query"),
)}


def parse_any_fault(text: str) -> FaultSpec:
    """A fault from the prefill catalogue or the decode-only one (``name`` or ``name@LAYER``)."""
    name, sep, layer_text = text.strip().partition("@")
    fault = DECODE_FAULTS.get(name.strip().lower())
    if fault is None:
        return parse_fault(text)
    if not sep:
        return FaultSpec(fault, DEFAULT_LAYER)
    return FaultSpec(fault, fault_layer(layer_text, text))


def is_decode_fault(spec: Any) -> bool:
    return spec is not None and getattr(spec, "name", None) in DECODE_FAULTS


@dataclass
class KVCache:
    """Per-layer keys (after RoPE) and values, ``[P, KVH, D]`` each, for one sequence."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    length: int = 0  # positions cached in every layer after a completed step

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor, fault: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k/v for ``layer``; returns every cached position's k and v."""
        old_k, old_v = self.keys.get(layer), self.values.get(layer)
        if old_k is None or old_v is None:
            all_k, all_v = k, v
        elif fault == "stale_cache_entry" and old_k.shape[0] > 0:
            # The write is lost: the slot of each new position repeats the last good entry.
            n = k.shape[0]
            all_k = torch.cat((old_k,) + (old_k[-1:],) * n, dim=0)
            all_v = torch.cat((old_v,) + (old_v[-1:],) * n, dim=0)
        else:
            all_k, all_v = torch.cat((old_k, k), dim=0), torch.cat((old_v, v), dim=0)
        self.keys[layer], self.values[layer] = all_k, all_v
        return all_k, all_v


def allowed(q_len: int, k_len: int, window: int | None, device: Any, fault: str | None = None) -> torch.Tensor:
    """[S_new, P + S_new] bool: query j (position P + j) sees key k when k <= P + j (within the window)."""
    past = k_len - q_len
    qpos = torch.arange(q_len, device=device)[:, None] + past
    kpos = torch.arange(k_len, device=device)[None, :]
    ok = kpos < qpos if fault == "mask_off_by_one_decode" else kpos <= qpos
    if window is not None:
        ok = ok & (kpos > qpos - window)
    return ok


def attention(heads: Attention, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              fault: str | None, tap: Any, window: int | None) -> torch.Tensor:
    """Attention of ``S_new`` queries over ``P + S_new`` cached keys; q [S, NH, D], k/v [P+S, KVH, D].

    The output comes from SDPA with an explicit boolean mask; the score and
    probability matrices, when asked for, are computed beside it with the eager
    formula (as in a prefill). A fault that changes the arithmetic runs the
    explicit path, whose result then is the output. ``heads`` is the model's
    ``Attention`` (GQA head mapping and scale).
    """
    s, nh, d = q.shape
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    want_scores = tap is not None and tap.wants("attn_scores", i)
    want_probs = tap is not None and tap.wants("attn_softmax", i)
    mask = allowed(s, kh.shape[1], window, qh.device, fault)
    explicit = fault in ("mask_off_by_one_decode", "gqa_head_mapping", "score_scale_1_over_d",
                         "softmax_wrong_axis")
    if not explicit:
        out = torch.nn.functional.scaled_dot_product_attention(
            qh[None], kh[None], vh[None], attn_mask=mask, scale=heads.config.attention_scale,
            enable_gqa=nh != kh.shape[0])[0]
        if not (want_scores or want_probs):
            return out.transpose(0, 1).reshape(s, nh * d)
    kv_of = heads.kv_of_faulty if fault == "gqa_head_mapping" else heads.kv_of
    k_rep = kh.index_select(0, kv_of)
    scale = 1.0 / d if fault == "score_scale_1_over_d" else heads.config.attention_scale
    meta = {} if explicit else {"provenance": "recomputed"}
    scores = torch.matmul(qh, k_rep.transpose(-1, -2)) * scale
    if want_scores:
        tap("attn_scores", i, scores, **meta)
    masked = scores.masked_fill(~mask, float("-inf"))
    axis = -2 if fault == "softmax_wrong_axis" else -1
    probs = torch.softmax(masked, dim=axis, dtype=torch.float32).to(qh.dtype)
    if want_probs:
        tap("attn_softmax", i, probs, **meta)
    if explicit:
        out = torch.matmul(probs, vh.index_select(0, kv_of))
    return out.transpose(0, 1).reshape(s, nh * d)
