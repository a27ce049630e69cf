"""An independent KV-cache decoder in numpy, standing in for another engine in the generation tests.

It shares no code with pv's engine or its oracle: it reads a Qwen2/Llama-shaped
model's float32 weights by their Hugging Face names (pv's synthetic model) and
computes one step at a time on its own preallocated KV cache, handing every
stage to a callback in pv's canonical layouts. It writes no manifest; its
files are those ``examples/aprt_writer.py`` writes.

``bug`` plants one decode-only mistake in ``bug_layer`` (the prefill never
changes), each of a kind real KV-cache code gets wrong:

- ``rope_stale_position``: the new token is rotated at position P - 1, not P
  (first visible at ``q_post_rope``);
- ``key_not_appended``: attention reads the cache before the new key and value
  are written, so the newest slot still holds what the buffer held (``attn_scores``);
- ``cache_write_off_by_one``: the new key and value are written one slot early,
  over the previous token's, and the newest slot stays empty (``attn_scores``);
- ``new_key_dropped``: attention runs over the P cached keys only, so the rows
  are ``[NH, 1, P]`` instead of ``[NH, 1, P + 1]`` (``attn_scores``);
- ``mask_hides_newest``: the decode mask hides the new token's own key (``attn_softmax``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

BUGS = ("rope_stale_position", "key_not_appended", "cache_write_off_by_one", "new_key_dropped",
        "mask_hides_newest")
#: Where each bug first shows (the stage ``pv bisect --generate`` must name at step 1).
FIRST_STAGE = {"rope_stale_position": "q_post_rope", "key_not_appended": "attn_scores",
               "cache_write_off_by_one": "attn_scores", "new_key_dropped": "attn_scores",
               "mask_hides_newest": "attn_softmax"}

Write = Callable[[str, "int | None", np.ndarray], None]

#: The prompt and the number of steps the generation tests decode, and the oracle's capture of them.
PROMPT = [5, 9, 33, 120, 77, 3, 17, 42]
STEPS = 3


def oracle_generation(model: Any, out: Any) -> Any:
    """``pv trace --engine hf --generate STEPS --save-tensor all`` of ``PROMPT`` into ``out``."""
    from pv.capture.generate import capture_generation
    from pv.capture.trace import make_plan

    capture_generation(make_plan("synthetic", model.config, tokens=PROMPT, engine="hf", stages="all", output=out),
                       model, STEPS)
    return out


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    scale = 1.0 / np.sqrt(np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True) + np.float32(eps))
    return (x * scale.astype(np.float32)) * weight


def _rotate(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE of ``x`` [S, heads, D] at ``positions`` [S]."""
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [S, D/2]
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(np.float32)


class NumpyDecoder:
    """Greedy decoding one step at a time; ``step(ids, write)`` returns the step's logits [S, V]."""

    def __init__(self, weights: Mapping[str, np.ndarray], config: Any, *, bug: str | None = None,
                 bug_layer: int = 1, max_positions: int = 64) -> None:
        if bug is not None and bug not in BUGS:
            raise ValueError(f"unknown bug {bug}; one of {', '.join(BUGS)}")
        self.w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self.n_layers = config.num_hidden_layers
        self.nh, self.kvh, self.d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.eps = config.rms_norm_eps
        self.inv_freq = (1.0 / (config.rope_theta ** (np.arange(0, self.d, 2, dtype=np.float32) / self.d))
                         ).astype(np.float32)
        self.bug, self.bug_layer = bug, bug_layer
        shape = (self.n_layers, max_positions, self.kvh, self.d)
        self.keys = np.zeros(shape, np.float32)
        self.values = np.zeros(shape, np.float32)
        self.length = 0

    def _buggy(self, layer: int, name: str) -> bool:
        return self.bug == name and layer == self.bug_layer and self.length > 0  # decode steps only

    def step(self, ids: list[int], write: Write) -> np.ndarray:
        past, n = self.length, len(ids)
        w = self.w
        x = w["model.embed_tokens.weight"][np.asarray(ids)]
        write("embedding", 0, x)
        for layer in range(self.n_layers):
            x = self._layer(layer, x, past, n, write)
        x = _rms_norm(x, w["model.norm.weight"], self.eps)
        write("final_norm", None, x)
        logits = x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T
        write("lm_head", None, logits)
        self.length = past + n
        return logits

    def _layer(self, layer: int, x: np.ndarray, past: int, n: int, write: Write) -> np.ndarray:
        p = f"model.layers.{layer}."
        w = self.w
        h = _rms_norm(x, w[p + "input_layernorm.weight"], self.eps)
        write("attn_norm", layer, h)
        names = ("q_proj", "k_proj", "v_proj")
        qkv = h @ np.concatenate([w[p + f"self_attn.{m}.weight"] for m in names]).T
        write("qkv_matmul", layer, qkv)
        if p + "self_attn.q_proj.bias" in w:
            qkv = qkv + np.concatenate([w[p + f"self_attn.{m}.bias"] for m in names])
            write("qkv_bias", layer, qkv)
        nq, nk = self.nh * self.d, self.kvh * self.d
        q = qkv[:, :nq].reshape(n, self.nh, self.d)
        k = qkv[:, nq:nq + nk].reshape(n, self.kvh, self.d)
        v = qkv[:, nq + nk:].reshape(n, self.kvh, self.d)
        positions = past + np.arange(n)
        if self._buggy(layer, "rope_stale_position"):
            positions = positions - 1
        q, k = _rotate(q, positions, self.inv_freq), _rotate(k, positions, self.inv_freq)
        write("q_post_rope", layer, q)
        write("k_post_rope", layer, k)
        keys, values = self._attend_cache(layer, k, v, past, n)
        out = self._attention(layer, q, keys, values, past, n, write)
        o = out @ w[p + "self_attn.o_proj.weight"].T
        write("attn_out", layer, o)
        x = x + o
        write("post_attn_residual", layer, x)
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
        write("ffn_norm", layer, h)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        write("ffn_gate", layer, gate)
        write("ffn_up", layer, up)
        act = (gate / (1.0 + np.exp(-gate))).astype(np.float32)
        write("ffn_silu", layer, act)
        write("ffn_swiglu", layer, act * up)
        f = (act * up) @ w[p + "mlp.down_proj.weight"].T
        write("ffn_out", layer, f)
        x = x + f
        write("post_ffn_residual", layer, x)
        return x

    def _attend_cache(self, layer: int, k: np.ndarray, v: np.ndarray, past: int,
                      n: int) -> tuple[np.ndarray, np.ndarray]:
        """Write the new keys and values into the cache; the keys and values attention reads."""
        total = past + n
        if self._buggy(layer, "new_key_dropped"):
            seen = (self.keys[layer, :past].copy(), self.values[layer, :past].copy())
            self.keys[layer, past:total], self.values[layer, past:total] = k, v
            return seen
        if self._buggy(layer, "key_not_appended"):
            seen = (self.keys[layer, :total].copy(), self.values[layer, :total].copy())
            self.keys[layer, past:total], self.values[layer, past:total] = k, v
            return seen
        at = past - 1 if self._buggy(layer, "cache_write_off_by_one") else past
        self.keys[layer, at:at + n], self.values[layer, at:at + n] = k, v
        return self.keys[layer, :total], self.values[layer, :total]

    def _attention(self, layer: int, q: np.ndarray, keys: np.ndarray, values: np.ndarray, past: int, n: int,
                   write: Write) -> np.ndarray:
        group = self.nh // self.kvh
        kh = np.repeat(keys, group, axis=1)  # [T, NH, D]: query head h reads kv head h // group
        vh = np.repeat(values, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, kh) * np.float32(1.0 / np.sqrt(self.d))
        write("attn_scores", layer, scores)
        t = keys.shape[0]
        offset = -1 if self._buggy(layer, "mask_hides_newest") else 0
        visible = np.arange(t)[None, :] <= (past + np.arange(n))[:, None] + offset  # [S, T]
        if not visible.any(axis=-1).all():
            visible[:, 0] = True  # a query that would see nothing sees the first key
        masked = np.where(visible[None], scores, -np.inf)
        e = np.exp(masked - masked.max(axis=-1, keepdims=True))
        probs = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        write("attn_softmax", layer, probs)
        out = np.einsum("hqk,khd->qhd", probs, vh).reshape(n, self.nh * self.d)
        write("attention", layer, out)
        return out
