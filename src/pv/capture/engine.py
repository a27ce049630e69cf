"""The capture engine: a Qwen2/Llama forward pass in PyTorch with a capture point after each step.

The forward reads like the equations, one sequence at a time ([S, H], no batch):
embedding, then per layer RMSNorm -> fused qkv matmul (+ bias) -> RoPE ->
causal GQA attention -> o_proj -> residual -> RMSNorm -> gate|up -> SiLU ->
SwiGLU -> down -> residual, then the final norm and lm_head.

Why it is built this way:

- **Capture is additive.** Each capture point is ``if tap is not None and
  tap.wants(...)``; nothing else depends on the tap. The attention output always
  comes from the same kernel (``scaled_dot_product_attention``), and the
  [NH, S, S] score and probability matrices are computed *beside* it, with the
  eager formula transformers uses (``q.kᵀ·scale``, masked, float32 softmax),
  only when ``attn_scores``/``attn_softmax`` are asked for. So the logits are
  byte-identical with and without a plan, and no score buffer exists unless
  requested; the manifest gives those two stages ``provenance: recomputed``
  (every other file is ``observed``: the tensor the forward itself used).
- **Faults** that change the attention arithmetic switch the faulted layer to
  the explicit path, in which the captured matrices are the ones actually used.
- **Numerics follow transformers**: RMSNorm in float32 then cast back, RoPE
  tables computed in float32 then cast, softmax in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pv.capture.faults import ATTENTION_FAULTS, FaultSpec, check_fault, parse_fault
from pv.capture.models import LoadedModel
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch
else:  # the engine is torch through and through; say which extra provides it
    torch = require("torch")

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> torch.dtype:
    key = name.strip().lower()
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if key not in table:
        raise PvError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    return table[key]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; refuse CUDA cleanly when there is none."""
    text = name.strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
            raise PvError(f"--device {name}: no CUDA device is available (torch {torch.__version__} built {build})")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise PvError(f"bad device '{name}'") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PvError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise PvError(f"unknown device '{name}'; use cpu, cuda or cuda:N")


@dataclass(frozen=True)
class _LayerWeights:
    attn_norm: Any
    wqkv: Any  # [NH*D + 2*KVH*D, H]: Wq | Wk | Wv, concatenated once at load
    bqkv: Any  # [NH*D + 2*KVH*D] or None
    wo: Any
    ffn_norm: Any
    wgu: Any  # [2*I, H]: W_gate | W_up
    wdown: Any


class Engine:
    """This project's forward pass; see the module docstring for the design."""

    def __init__(
        self,
        model: LoadedModel,
        device: str = "cpu",
        dtype: str = "float32",
        fault: FaultSpec | str | None = None,
    ):
        self.model = model
        self.config = cfg = model.config
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        self.dtype_name = dtype.strip().lower()
        self.fault = parse_fault(fault) if isinstance(fault, str) else fault
        if self.fault is not None:
            check_fault(self.fault, cfg.num_hidden_layers, cfg.features)
        self._fault_name = self.fault.name if self.fault else None
        self._fault_layer = self.fault.layer if self.fault else None

        sd = model.state_dict

        def t(name: str) -> torch.Tensor:
            arr = np.asarray(sd[name], dtype=np.float32)
            src = torch.from_numpy(arr) if arr.flags.writeable else torch.tensor(arr)
            return src.to(device=self.device, dtype=self.dtype)

        self.embed = t("model.embed_tokens.weight")
        self.lm_head = self.embed if cfg.tie_word_embeddings else t("lm_head.weight")
        self.final_norm = t("model.norm.weight")
        self.layers: list[_LayerWeights] = []
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            wq, wk, wv = (t(p + f"self_attn.{n}_proj.weight") for n in "qkv")
            if self._fault_name == "kv_weights_swapped" and self._fault_layer == i:
                wk, wv = wv, wk
            bqkv = None
            if cfg.attention_bias:
                bqkv = torch.cat([t(p + f"self_attn.{n}_proj.bias") for n in "qkv"]).contiguous()
            self.layers.append(
                _LayerWeights(
                    attn_norm=t(p + "input_layernorm.weight"),
                    wqkv=torch.cat([wq, wk, wv], dim=0).contiguous(),
                    bqkv=bqkv,
                    wo=t(p + "self_attn.o_proj.weight"),
                    ffn_norm=t(p + "post_attention_layernorm.weight"),
                    wgu=torch.cat([t(p + "mlp.gate_proj.weight"), t(p + "mlp.up_proj.weight")]).contiguous(),
                    wdown=t(p + "mlp.down_proj.weight"),
                )
            )
        d = cfg.head_dim
        self._nq = cfg.num_attention_heads * d
        self._nk = cfg.num_key_value_heads * d
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        self._kv_of = torch.arange(cfg.num_attention_heads, device=self.device) // group
        self._kv_of_faulty = torch.arange(cfg.num_attention_heads, device=self.device) % cfg.num_key_value_heads
        self._inv_freq = self._inverse_frequencies(cfg.rope_theta)
        self._inv_freq_faulty = self._inverse_frequencies(cfg.rope_theta / 10.0)

    # ------------------------------------------------------------------ public API

    def forward(self, token_ids: Sequence[int], tap: Any = None) -> torch.Tensor:
        """Logits [S, V] float32 for one sequence; ``tap`` receives requested stages."""
        ids = self._ids(token_ids)
        with torch.inference_mode():
            x = torch.nn.functional.embedding(ids, self.embed)
            if self._fault_name == "embedding_scaled":
                x = x * math.sqrt(self.config.hidden_size)
            if tap is not None and tap.wants("embedding", 0):
                tap("embedding", 0, x)
            if tap is not None and self.layers[0].bqkv is None:
                tap.not_applicable("qkv_bias", "the model has no q/k/v bias")
            rope = self._rope_tables(len(ids))
            for i, w in enumerate(self.layers):
                x = self._layer(i, w, x, rope, tap)
            if self._fault_name == "final_norm_skipped":
                h = x
            else:
                h = self._rms_norm(x, self.final_norm)
            if tap is not None and tap.wants("final_norm", None):
                tap("final_norm", None, h)
            logits = torch.nn.functional.linear(h, self.lm_head)
            if tap is not None and tap.wants("lm_head", None):
                tap("lm_head", None, logits)
            return logits.float()

    def run_layer(self, layer: int, hidden: np.ndarray, tap: Any = None) -> np.ndarray:
        """One decoder layer from a given input [S, H] (for ``pv bisect --isolate``)."""
        n = self.config.num_hidden_layers
        if not 0 <= layer < n:
            raise PvError(f"layer {layer} out of range: the model has {n} layers (0..{n - 1})")
        arr = np.asarray(hidden, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.config.hidden_size:
            raise PvError(f"run_layer: hidden must be [S, {self.config.hidden_size}], got {list(arr.shape)}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(device=self.device, dtype=self.dtype)
            if tap is not None and self.layers[0].bqkv is None:
                tap.not_applicable("qkv_bias", "the model has no q/k/v bias")
            out = self._layer(layer, self.layers[layer], x, self._rope_tables(arr.shape[0]), tap)
            return out.float().cpu().numpy()

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation: re-runs the full forward per new token (exact, no cache)."""
        ids = [int(i) for i in token_ids]
        out: list[int] = []
        for _ in range(int(max_new_tokens)):
            logits = self.forward(ids + out)
            out.append(int(torch.argmax(logits[-1]).item()))
        return out

    # ------------------------------------------------------------------ internals

    def _ids(self, token_ids: Sequence[int]) -> torch.Tensor:
        ids = [int(i) for i in token_ids]
        if not ids:
            raise PvError("no tokens to run")
        vocab = self.config.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise PvError(f"token id {bad[0]} out of range for a vocabulary of {vocab}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _inverse_frequencies(self, theta: float) -> torch.Tensor:
        d = self.config.head_dim
        exponents = torch.arange(0, d, 2, dtype=torch.int64, device=self.device).float() / d
        return 1.0 / (theta ** exponents)

    def _rope_tables(self, seq_len: int) -> dict[str, torch.Tensor]:
        """cos/sin [S, 1, D] in the compute dtype, computed in float32 as transformers does."""
        pos = torch.arange(seq_len, device=self.device, dtype=torch.float32)
        tables: dict[str, torch.Tensor] = {}
        for key, inv in (("", self._inv_freq), ("faulty_", self._inv_freq_faulty)):
            if key and self._fault_name != "rope_theta_wrong":
                continue
            freqs = pos[:, None] * inv[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            tables[key + "cos"] = emb.cos().to(self.dtype)[:, None, :]
            tables[key + "sin"] = emb.sin().to(self.dtype)[:, None, :]
        return tables

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps)
        h = h.to(x.dtype)
        return h if weight is None else weight * h

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
        half = x.shape[-1] // 2
        if interleaved:  # the fault: rotate adjacent pairs with the per-pair frequency
            pairs = x.view(*x.shape[:-1], half, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            c, s = cos[..., :half], sin[..., :half]
            return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layer(self, i: int, w: _LayerWeights, x: torch.Tensor, rope: dict[str, torch.Tensor], tap: Any) -> torch.Tensor:
        F = torch.nn.functional
        cfg = self.config
        fault = self._fault_name if self._fault_layer == i else None
        h = self._rms_norm(x, None if fault == "attn_norm_no_weight" else w.attn_norm)
        if tap is not None and tap.wants("attn_norm", i):
            tap("attn_norm", i, h)
        qkv = F.linear(h, w.wqkv)
        if tap is not None and tap.wants("qkv_matmul", i):
            tap("qkv_matmul", i, qkv)
        if w.bqkv is not None:
            if fault != "qkv_bias_dropped":
                qkv = qkv + w.bqkv
            if tap is not None and tap.wants("qkv_bias", i):
                tap("qkv_bias", i, qkv)
        s, nh, kvh, d = qkv.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = qkv[:, : self._nq].view(s, nh, d)  # views into the fused output, no copies
        k = qkv[:, self._nq : self._nq + self._nk].view(s, kvh, d)
        v = qkv[:, self._nq + self._nk :].view(s, kvh, d)
        prefix = "faulty_" if fault == "rope_theta_wrong" else ""
        cos, sin = rope[prefix + "cos"], rope[prefix + "sin"]
        interleaved = fault == "rope_interleaved"
        q = self._rope(q, cos, sin, interleaved)
        k = self._rope(k, cos, sin, interleaved)
        if tap is not None and tap.wants("q_post_rope", i):
            tap("q_post_rope", i, q)
        if tap is not None and tap.wants("k_post_rope", i):
            tap("k_post_rope", i, k)

        attn = self._attention(i, q, k, v, fault, tap)  # [S, NH*D]
        if tap is not None and tap.wants("attention", i):
            tap("attention", i, attn)
        o = F.linear(attn, w.wo)
        if tap is not None and tap.wants("attn_out", i):
            tap("attn_out", i, o)
        x = o if fault == "attn_residual_dropped" else x + o
        if tap is not None and tap.wants("post_attn_residual", i):
            tap("post_attn_residual", i, x)

        h = self._rms_norm(x, w.attn_norm if fault == "ffn_norm_attn_weight" else w.ffn_norm)
        if tap is not None and tap.wants("ffn_norm", i):
            tap("ffn_norm", i, h)
        gu = F.linear(h, w.wgu)
        inter = cfg.intermediate_size
        gate, up = gu[:, :inter], gu[:, inter:]
        if tap is not None and tap.wants("ffn_gate", i):
            tap("ffn_gate", i, gate)
        if tap is not None and tap.wants("ffn_up", i):
            tap("ffn_up", i, up)
        if fault == "swiglu_silu_on_up":
            act, other = F.silu(up), gate
        else:
            act, other = F.silu(gate), up
        if tap is not None and tap.wants("ffn_silu", i):
            tap("ffn_silu", i, act)
        sw = act * other
        if tap is not None and tap.wants("ffn_swiglu", i):
            tap("ffn_swiglu", i, sw)
        down = F.linear(sw, w.wdown)
        if tap is not None and tap.wants("ffn_out", i):
            tap("ffn_out", i, down)
        x = down if fault == "ffn_residual_dropped" else x + down
        if tap is not None and tap.wants("post_ffn_residual", i):
            tap("post_ffn_residual", i, x)
        return x

    def _attention(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fault: str | None, tap: Any) -> torch.Tensor:
        """Causal GQA attention; q [S, NH, D], k/v [S, KVH, D] -> [S, NH*D]."""
        s, nh, d = q.shape
        qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        want_scores = tap is not None and tap.wants("attn_scores", i)
        want_probs = tap is not None and tap.wants("attn_softmax", i)
        if fault in ATTENTION_FAULTS:
            return self._explicit_attention(i, qh, kh, vh, fault, tap, want_scores, want_probs, True)
        # 4-D inputs: on the CPU that selects the fused (flash) kernel, which never
        # materialises [NH, S, S]; 3-D inputs would fall back to the math kernel.
        out = torch.nn.functional.scaled_dot_product_attention(
            qh[None], kh[None], vh[None], is_causal=True, scale=1.0 / math.sqrt(d),
            enable_gqa=nh != kh.shape[0],
        )[0]
        if want_scores or want_probs:
            # Capture only: the same scores the eager formula gives, never fed forward.
            self._explicit_attention(i, qh, kh, vh, None, tap, want_scores, want_probs, False)
        return out.transpose(0, 1).reshape(s, nh * d)

    def _explicit_attention(self, i: int, qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor,
                            fault: str | None, tap: Any, want_scores: bool, want_probs: bool,
                            used: bool) -> torch.Tensor:
        """Materialised [NH, S, S] scores and probabilities (eager math, float32 softmax)."""
        nh, s, d = qh.shape
        meta = {} if used else {"provenance": "recomputed"}
        kv_of = self._kv_of_faulty if fault == "gqa_head_mapping" else self._kv_of
        k_rep = kh.index_select(0, kv_of)
        scale = 1.0 / d if fault == "score_scale_1_over_d" else 1.0 / math.sqrt(d)
        scores = torch.matmul(qh, k_rep.transpose(-1, -2)) * scale
        if want_scores:
            tap("attn_scores", i, scores, **meta)
        if not (used or want_probs):
            return scores
        offset = 1 if fault == "mask_off_by_one" else 0
        allowed = torch.ones(s, s, dtype=torch.bool, device=scores.device).tril(offset)
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
