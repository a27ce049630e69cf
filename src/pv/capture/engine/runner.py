"""The capture engine: a decoder forward pass in PyTorch with a capture point after each step.

The forward reads like the equations, one sequence at a time ([S, H], no batch):
embedding (scaled by sqrt(H) for Gemma), then per layer RMSNorm -> fused qkv
matmul (+ bias) -> per-head q/k RMSNorm (Qwen3, Gemma 3) -> RoPE -> causal GQA
attention (sliding-window on the layers whose mask policy says so) -> o_proj
(-> sandwich norm) -> residual -> RMSNorm -> gate|up -> SiLU or tanh-GELU ->
product -> down, or a top-k routed expert block (MoE) (-> sandwich norm) ->
residual, then the final norm and lm_head. What a family has comes from the
architecture registry (``pv.capture.model.arch``) through ``ModelConfig``; the
weights are prepared in ``pv.capture.engine.weights``, attention is
``pv.capture.engine.attention`` and the KV cache ``pv.capture.engine.kvcache``.

Why it is built this way:

- **Capture is additive.** Each capture point is ``if tap is not None and
  tap.wants(...)``; nothing else depends on the tap. The attention output always
  comes from the same kernel, and the score and probability matrices are
  computed beside it only when asked for (``pv.capture.engine.attention``). So the
  logits are byte-identical with and without a plan; the manifest gives those
  two stages ``provenance: recomputed`` (every other file is ``observed``: the
  tensor the forward itself used).
- **Numerics follow transformers**: RMSNorm in float32 then cast back (Gemma:
  multiplied by ``1 + w`` in float32 before the cast, Llama: by ``w`` after it),
  RoPE frequencies and tables computed in float32 then cast, softmax in float32.
  In half precision the RoPE inverse frequencies stay float32 (the reference
  decision in ``docs/oracle.md``).
- **Kernels are recorded**: ``kernels()`` says which SDPA backend torch picks
  for these inputs and whether TF32 was allowed; TF32 is off during a forward
  unless ``tf32=True``, so a CUDA float32 capture is true float32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pv import stages as stage_table
from pv.capture.engine import blocks, kvcache
from pv.capture.engine.attention import Attention
from pv.capture.engine.weights import LayerWeights, load
from pv.capture.faults import FaultSpec, check_fault
from pv.capture.model.loaded import LoadedModel
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


class Engine:
    """This project's forward pass; see the module docstring for the design."""

    def __init__(
        self,
        model: LoadedModel,
        device: str = "cpu",
        dtype: str = "float32",
        fault: FaultSpec | str | None = None,
        *,
        tf32: bool = False,
    ):
        self.model = model
        self.tf32 = bool(tf32)
        self.config = cfg = model.config
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        self.dtype_name = dtype.strip().lower()
        self.fault = kvcache.parse_any_fault(fault) if isinstance(fault, str) else fault
        if self.fault is not None:
            check_fault(self.fault, cfg.num_hidden_layers, cfg.features)
        self._fault_name = self.fault.name if self.fault else None
        self._fault_layer = self.fault.layer if self.fault else None
        self._offset_norm = cfg.family.norm_offset

        weights = load(model, self.device, self.dtype, self._fault_name, self._fault_layer)
        self.embed, self.lm_head, self.final_norm = weights.embed, weights.lm_head, weights.final_norm
        self._embed_scale = weights.embed_scale
        self.layers: list[LayerWeights] = weights.layers
        self._act = blocks.activation(cfg.hidden_act)
        self._act_fault = blocks.activation(cfg.hidden_act, exact_gelu=True)
        if self._fault_name == "sliding_window_ignored" and self.layers[self._fault_layer or 0].window is None:
            raise PvError(f"fault {self.fault}: layer {self._fault_layer} has no sliding window")
        d = cfg.head_dim
        self._nq = cfg.num_attention_heads * d
        self._nk = cfg.num_key_value_heads * d
        self.attention = Attention(cfg, self.device)
        self._inv_freqs = {"global": self._inverse_frequencies(cfg.rope_theta, global_layer=True)}
        if cfg.rope_local_theta is not None:
            self._inv_freqs["local"] = self._inverse_frequencies(cfg.rope_local_theta, global_layer=False)
        if self._fault_name == "rope_theta_wrong":
            key = self.layers[self._fault_layer or 0].rope
            self._inv_freqs["faulty_" + key] = self._inverse_frequencies(
                (cfg.rope_local_theta if key == "local" else cfg.rope_theta) / 10.0,  # type: ignore[operator]
                global_layer=key == "global")
        self._absent = stage_table.absent(cfg.features)
        #: Set only inside ``decode``: the cache being extended and the position it starts at.
        self._cache: kvcache.KVCache | None = None
        self._past = 0

    # ------------------------------------------------------------------ public API

    def forward(self, token_ids: Sequence[int], tap: Any = None) -> torch.Tensor:
        """Logits [S, V] float32 for one sequence; ``tap`` receives requested stages."""
        ids = self._ids(token_ids)
        if tap is not None and hasattr(tap, "borrow"):
            tap.borrow = True  # this forward never modifies a tensor after tapping it
        with torch.inference_mode(), self._numerics():
            x = torch.nn.functional.embedding(ids, self.embed)
            if self._embed_scale is not None:
                x = x * self._embed_scale
            if self._fault_name == "embedding_scaled":
                x = x * math.sqrt(self.config.hidden_size)
            if tap is not None and tap.wants("embedding", 0):
                tap("embedding", 0, x)
            self._mark_absent(tap)
            rope = self._rope_tables(len(ids), self._past)
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

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of how this engine computes: kernels and mask policy."""
        return {"kernels": self.kernels(), "mask": self.config.mask_policy()}

    def kernels(self) -> dict[str, Any]:
        """Which kernels produce a capture: the SDPA backend torch picks, TF32, matmul precision.

        Before a forward has run, the backend is the one torch picks for an 8-token
        input of this model (the same dispatch rule the forward goes through).
        """
        if self.attention.backend is None:
            with self._numerics():
                self.attention.probe(self.dtype, [w.window for w in self.layers])
        return {
            "sdpa_backend": self.attention.backend,
            "tf32": self.tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "device_name": (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                            else "cpu"),
        }

    def run_layer(self, layer: int, hidden: np.ndarray, tap: Any = None) -> np.ndarray:
        """One decoder layer from a given input [S, H] (for ``pv bisect --isolate``)."""
        n = self.config.num_hidden_layers
        if not 0 <= layer < n:
            raise PvError(f"layer {layer} out of range: the model has {n} layers (0..{n - 1})")
        arr = np.asarray(hidden, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.config.hidden_size:
            raise PvError(f"run_layer: hidden must be [S, {self.config.hidden_size}], got {list(arr.shape)}")
        with torch.inference_mode(), self._numerics():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(device=self.device, dtype=self.dtype)
            self._mark_absent(tap)
            out = self._layer(layer, self.layers[layer], x, self._rope_tables(arr.shape[0]), tap)
            return out.float().cpu().numpy()

    def start(self) -> kvcache.KVCache:
        """An empty KV cache for one sequence (see ``decode``)."""
        return kvcache.KVCache()

    def decode(self, token_ids: Sequence[int], cache: kvcache.KVCache, tap: Any = None) -> torch.Tensor:
        """Run new tokens at positions ``cache.length ..`` on top of ``cache``; logits [S_new, V].

        With an empty cache this is a prefill (the same arithmetic as ``forward``)
        that fills the cache; afterwards each call is a decode step whose queries
        attend to every cached position. The tap sees the new tokens' stages, with
        scores and probabilities ``[NH, S_new, P + S_new]``. A failed step leaves the
        cache as it was.
        """
        before = cache.length
        self._cache, self._past = cache, before
        try:
            logits = self.forward(token_ids, tap)
        except BaseException:
            for store in (cache.keys, cache.values):
                for layer in list(store):
                    store[layer] = store[layer][:before]
            raise
        finally:
            self._cache, self._past = None, 0
        cache.length = before + len(token_ids)
        return logits

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation with the KV cache: one prefill, then one decode step per new token."""
        n = int(max_new_tokens)
        out: list[int] = []
        if n <= 0:
            return out
        cache = self.start()
        logits = self.decode(token_ids, cache)
        for step in range(n):
            out.append(int(torch.argmax(logits[-1]).item()))
            if step + 1 < n:
                logits = self.decode(out[-1:], cache)
        return out

    def generate_recompute(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation that re-runs the full forward per new token (no cache)."""
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

    def _mark_absent(self, tap: Any) -> None:
        if tap is not None:
            for name, reason in self._absent:
                tap.not_applicable(name, reason)

    @contextlib.contextmanager
    def _numerics(self) -> Iterator[None]:
        """TF32 pinned (off unless asked for) for the forward, the user's setting restored after."""
        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    def _inverse_frequencies(self, theta: float, global_layer: bool) -> torch.Tensor:
        cfg = self.config
        return blocks.inverse_frequencies(
            cfg.head_dim, theta, self.device,
            scaling=cfg.rope_scaling if global_layer else None,
            factors=cfg.rope_freq_factors if global_layer else None)

    def _rope_tables(self, seq_len: int, start: int = 0) -> dict[str, torch.Tensor]:
        """cos/sin [S, 1, D] per frequency set, in the compute dtype, computed in float32."""
        pos = torch.arange(start, start + seq_len, device=self.device, dtype=torch.float32)
        tables: dict[str, torch.Tensor] = {}
        inv_freqs = dict(self._inv_freqs)
        if self._fault_name == "rope_position_ignores_cache" and start > 0:
            pos0 = torch.arange(seq_len, device=self.device, dtype=torch.float32)
            for key, inv in self._inv_freqs.items():
                emb0 = torch.cat((pos0[:, None] * inv[None, :],) * 2, dim=-1)
                tables["nocache_" + key + "_cos"] = emb0.cos().to(self.dtype)[:, None, :]
                tables["nocache_" + key + "_sin"] = emb0.sin().to(self.dtype)[:, None, :]
        for key, inv in inv_freqs.items():
            freqs = pos[:, None] * inv[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            tables[key + "_cos"] = emb.cos().to(self.dtype)[:, None, :]
            tables[key + "_sin"] = emb.sin().to(self.dtype)[:, None, :]
        return tables

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps)
        if self._offset_norm:  # Gemma: (x * (1 + w)) in float32, then the cast
            return (h if weight is None else h * weight).to(x.dtype)
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

    def _layer(self, i: int, w: LayerWeights, x: torch.Tensor, rope: dict[str, torch.Tensor], tap: Any) -> torch.Tensor:
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
        if w.q_norm is not None:
            q = self._rms_norm(q, None if fault == "q_norm_no_weight" else w.q_norm)
            if tap is not None and tap.wants("q_norm", i):
                tap("q_norm", i, q)
            k = self._rms_norm(k, w.q_norm if fault == "k_norm_q_weight" else w.k_norm)
            if tap is not None and tap.wants("k_norm", i):
                tap("k_norm", i, k)
        key = ("faulty_" if fault == "rope_theta_wrong" else "") + w.rope
        cos, sin = rope[key + "_cos"], rope[key + "_sin"]
        if fault == "rope_position_ignores_cache" and self._past > 0:
            cos, sin = rope["nocache_" + w.rope + "_cos"], rope["nocache_" + w.rope + "_sin"]
        interleaved = fault == "rope_interleaved"
        q = self._rope(q, cos, sin, interleaved)
        k = self._rope(k, cos, sin, interleaved)
        if tap is not None and tap.wants("q_post_rope", i):
            tap("q_post_rope", i, q)
        if tap is not None and tap.wants("k_post_rope", i):
            tap("k_post_rope", i, k)
        if self._cache is not None:  # decode: attend over every cached position
            k, v = self._cache.extend(i, k, v, fault if self._past > 0 else None)

        attn = self.attention(i, q, k, v, fault, tap, w.window,  # [S, NH*D]
                              cached=self._cache is not None and self._past > 0)
        if tap is not None and tap.wants("attention", i):
            tap("attention", i, attn)
        o = F.linear(attn, w.wo)
        if tap is not None and tap.wants("attn_out", i):
            tap("attn_out", i, o)
        if w.post_attn_norm is not None and fault != "post_attn_norm_skipped":
            o = self._rms_norm(o, w.post_attn_norm)
        if w.post_attn_norm is not None and tap is not None and tap.wants("post_attn_norm", i):
            tap("post_attn_norm", i, o)
        x = o if fault == "attn_residual_dropped" else x + o
        if tap is not None and tap.wants("post_attn_residual", i):
            tap("post_attn_residual", i, x)

        h = self._rms_norm(x, w.attn_norm if fault == "ffn_norm_attn_weight" else w.ffn_norm)
        if tap is not None and tap.wants("ffn_norm", i):
            tap("ffn_norm", i, h)
        if w.router is not None:
            down = blocks.moe(h, x, w.router, w.experts_gu, w.experts_down, cfg.num_experts_per_tok,
                              cfg.norm_topk_prob, self._act, i, tap, fault,
                              weights_float32=cfg.family.router_weights_float32)
            if tap is not None and tap.wants("moe_out", i):
                tap("moe_out", i, down)
        else:
            down = self._mlp(i, w, h, fault, tap)
        if w.post_ffn_norm is not None and fault != "post_ffn_norm_skipped":
            down = self._rms_norm(down, w.post_ffn_norm)
        if w.post_ffn_norm is not None and tap is not None and tap.wants("post_ffn_norm", i):
            tap("post_ffn_norm", i, down)
        x = down if fault == "ffn_residual_dropped" else x + down
        if tap is not None and tap.wants("post_ffn_residual", i):
            tap("post_ffn_residual", i, x)
        return x

    def _mlp(self, i: int, w: LayerWeights, h: torch.Tensor, fault: str | None, tap: Any) -> torch.Tensor:
        """gate|up -> activation(gate) * up -> down (SwiGLU, or GeGLU with tanh-GELU)."""
        F = torch.nn.functional
        gu = F.linear(h, w.wgu)
        inter = self.config.intermediate_size
        gate, up = gu[:, :inter], gu[:, inter:]
        if tap is not None and tap.wants("ffn_gate", i):
            tap("ffn_gate", i, gate)
        if tap is not None and tap.wants("ffn_up", i):
            tap("ffn_up", i, up)
        act_fn = self._act_fault if fault == "gelu_exact" else self._act
        if fault == "swiglu_silu_on_up":
            act, other = act_fn(up), gate
        else:
            act, other = act_fn(gate), up
        if tap is not None and tap.wants("ffn_silu", i):
            tap("ffn_silu", i, act)
        sw = act * other
        if tap is not None and tap.wants("ffn_swiglu", i):
            tap("ffn_swiglu", i, sw)
        down = F.linear(sw, w.wdown)
        if tap is not None and tap.wants("ffn_out", i):
            tap("ffn_out", i, down)
        return down
