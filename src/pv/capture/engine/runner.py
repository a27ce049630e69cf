"""The capture engine: a decoder forward pass in PyTorch with a capture point after each step.

The forward reads like the equations, one sequence at a time ([S, H], no batch):
embedding (scaled by sqrt(H) for Gemma, by its multiplier for Granite), then per
layer RMSNorm -> fused qkv matmul (+ bias) -> per-head q/k RMSNorm (Qwen3, Gemma 3)
-> RoPE -> causal GQA attention (sliding-window on the layers whose mask policy
says so) -> o_proj (-> sandwich norm) -> residual (Granite: the branch scaled
first) -> RMSNorm -> gate|up -> SiLU or tanh-GELU -> product -> down, or a top-k
routed expert block (MoE) (-> sandwich norm) -> residual, then the final norm
and lm_head (Granite: divided by its logits scaling). What a family has comes from the
architecture registry (``pv.capture.model.arch``) through ``ModelConfig``; the
weights are prepared in ``weights``, what each layer computes with (and where a
planted fault changes it) in ``layers``, attention is ``attention`` and the KV
cache ``kvcache``.

Why it is built this way:

- **Capture is additive.** Each step's output goes through a capture point
  (``layers.Points``) to the tap, a ``NullTap`` when nothing is captured;
  nothing the forward computes depends on the tap. The attention output always
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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pv import stages as stage_table
from pv.capture.engine import blocks, layers
from pv.capture.engine.attention import Attention
from pv.capture.engine.kvcache import KVCache
from pv.capture.engine.layers import LayerSpec, Points
from pv.capture.engine.weights import Loader
from pv.capture.faults import FaultSpec, Perturb, check_fault, parse_fault
from pv.capture.model.loaded import LoadedModel
from pv.capture.model.rope import inverse_frequencies
from pv.capture.runners import Exposure, Settings
from pv.capture.runtime import resolve_device, torch_dtype
from pv.capture.tap import NULL_TAP, Tap, row_blocks
from pv.capture.tokens import check_ids
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch
else:  # the engine is torch through and through; say which extra provides it
    torch = require("torch")


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
        self.fault = parse_fault(fault) if isinstance(fault, str) else fault
        if self.fault is not None:
            check_fault(self.fault, cfg.num_hidden_layers, cfg.features)
        loader = Loader(model, self.device, self.dtype)
        weights = loader.load()
        self.embed, self.lm_head, self.final_norm = weights.embed, weights.lm_head, weights.final_norm
        self._embed_scale = weights.embed_scale
        self._offset_norm = cfg.family.norm_offset
        self._qk_norm = cfg.features.get("qk_norm", False)
        #: What each layer computes with; a planted fault has changed its layer's entry.
        self.layers: list[LayerSpec] = layers.build(loader, weights.layers)
        #: Stage outputs a planted fault changes: (stage, layer) -> how.
        self._outputs: dict[tuple[str, int | None], Perturb] = {}
        if self.fault is not None:
            layers.plant(self.fault, self.layers, loader, self._outputs)
        d = cfg.head_dim
        self._nq = cfg.num_attention_heads * d
        self._nk = cfg.num_key_value_heads * d
        self.attention = Attention(cfg, self.device)
        self._inv_freqs = {
            key: inverse_frequencies(d, theta, self.device,
                                            scaling=cfg.rope_scaling if is_global else None,
                                            factors=cfg.rope_freq_factors if is_global else None)
            for key, (theta, is_global) in layers.frequency_sets(cfg, self.layers).items()
        }
        self._exposure = Exposure(dict(stage_table.absent(cfg.features)))
        #: Set only inside ``decode``: the cache being extended and the position it starts at.
        self._cache: KVCache | None = None
        self._past = 0

    # ------------------------------------------------------------------ public API

    def forward(self, token_ids: Sequence[int], tap: Tap = NULL_TAP, *, last: bool = False) -> torch.Tensor:
        """Logits [S, V] float32 for one sequence (``last``: the last position's only, [1, V]); ``tap``
        receives the stages it wants."""
        ids = torch.tensor(check_ids(token_ids, self.config.vocab_size), dtype=torch.long, device=self.device)
        tap.borrow = True  # this forward never modifies a tensor after handing it over
        point = Points(tap, self._outputs)
        with torch.inference_mode(), self._numerics():
            rows = torch.nn.functional.embedding(ids, self.embed)
            if self._embed_scale is not None:
                rows = rows * self._embed_scale
            x = point("embedding", 0, _scaled(rows, self.config.embedding_multiplier), rows)
            self._exposure.tell(tap)
            rope = self._rope(len(ids), self._past)
            for layer in self.layers:
                x = self._layer(layer, x, rope, point)
            h = point("final_norm", None, self._rms_norm(x, self.final_norm), x)
            return self._logits(h, point, last)

    def _logits(self, h: torch.Tensor, point: Points, last: bool) -> torch.Tensor:
        """lm_head (Granite: divided by its logits scaling), float32. Logits over ``PART_BYTES`` are
        computed and handed over in blocks of rows (``row_blocks``), so [S, V] exists only when
        every row is asked for."""
        def head(rows: torch.Tensor, **meta: Any) -> torch.Tensor:
            raw = torch.nn.functional.linear(rows, self.lm_head)
            scaled = raw if self.config.logits_scaling == 1.0 else raw / self.config.logits_scaling
            return point("lm_head", None, scaled, raw, **meta).float()

        split = row_blocks((h.shape[0], self.lm_head.shape[0]))
        if split is None:
            logits = head(h)
            return logits[-1:] if last else logits
        out = None if last else torch.empty(h.shape[0], self.lm_head.shape[0], device=h.device)
        for part in split:
            block = head(h[part.lo:part.hi], part=part)
            if out is not None:
                out[part.lo:part.hi] = block
        return block[-1:].clone() if out is None else out

    def stages(self) -> Exposure:
        return self._exposure

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of how this engine computes: kernels and mask policy."""
        return {"kernels": self.kernels(), "mask": self.config.mask_policy()}

    def kernels(self) -> dict[str, Any]:
        """Which kernels produce a capture: the SDPA backend torch picks, TF32, matmul precision.

        Before a forward has run, the backend is the one torch picks for an 8-token
        input of this model (the same dispatch rule the forward goes through).
        """
        cfg = self.config
        if self.attention.backend is None:
            with self._numerics():
                self.attention.probe(self.dtype, [cfg.layer_window(i) for i in range(cfg.num_hidden_layers)])
        return {
            "sdpa_backend": self.attention.backend,
            "tf32": self.tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "device_name": (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                            else "cpu"),
        }

    def run_layer(self, layer: int, hidden: np.ndarray, tap: Tap = NULL_TAP) -> np.ndarray:
        """One decoder layer from a given input [S, H] (for ``pv bisect --isolate``)."""
        n = self.config.num_hidden_layers
        if not 0 <= layer < n:
            raise PvError(f"layer {layer} out of range: the model has {n} layers (0..{n - 1})")
        arr = np.asarray(hidden, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.config.hidden_size:
            raise PvError(f"run_layer: hidden must be [S, {self.config.hidden_size}], got {list(arr.shape)}")
        with torch.inference_mode(), self._numerics():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(device=self.device, dtype=self.dtype)
            self._exposure.tell(tap)
            out = self._layer(self.layers[layer], x, self._rope(arr.shape[0], 0), Points(tap, self._outputs))
            result: np.ndarray = out.float().cpu().numpy()
            return result

    def start(self) -> KVCache:
        """An empty KV cache for one sequence (see ``decode``)."""
        return KVCache()

    def decode(self, token_ids: Sequence[int], cache: KVCache, tap: Tap = NULL_TAP, *,
               last: bool = False) -> torch.Tensor:
        """Run new tokens at positions ``cache.length ..`` on top of ``cache``; logits [S_new, V]
        (``last``: [1, V]).

        With an empty cache this is a prefill (the same arithmetic as ``forward``)
        that fills the cache; afterwards each call is a decode step whose queries
        attend to every cached position. The tap sees the new tokens' stages, with
        scores and probabilities ``[NH, S_new, P + S_new]``. A failed step leaves the
        cache as it was.
        """
        before = cache.length
        self._cache, self._past = cache, before
        try:
            logits = self.forward(token_ids, tap, last=last)
        except BaseException:
            cache.truncate(before)
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

    def close(self) -> None:
        """Nothing to free: the weights are ordinary tensors."""

    # ------------------------------------------------------------------ internals

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

    def _rope(self, seq_len: int, past: int) -> _RopeTables:
        return _RopeTables(self._inv_freqs, seq_len, past, self.dtype, self.device)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps)
        if self._offset_norm:  # Gemma: (x * (1 + w)) in float32, then the cast
            return (h if weight is None else h * weight).to(x.dtype)
        h = h.to(x.dtype)
        return h if weight is None else weight * h

    def _layer(self, layer: LayerSpec, x: torch.Tensor, rope: _RopeTables, point: Points) -> torch.Tensor:
        F = torch.nn.functional
        cfg, i, w = self.config, layer.index, layer.weights
        h = point("attn_norm", i, self._rms_norm(x, w.attn_norm))
        qkv = point("qkv_matmul", i, F.linear(h, w.wqkv))
        if w.bqkv is not None:
            qkv = point("qkv_bias", i, qkv + w.bqkv, qkv)
        s, nh, kvh, d = qkv.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = qkv[:, : self._nq].view(s, nh, d)  # views into the fused output, no copies
        k = qkv[:, self._nq : self._nq + self._nk].view(s, kvh, d)
        v = qkv[:, self._nq + self._nk :].view(s, kvh, d)
        if self._qk_norm:
            q = point("q_norm", i, self._rms_norm(q, w.q_norm))
            k = point("k_norm", i, self._rms_norm(k, w.k_norm))
        cos, sin = rope.tables(layer)
        q = point("q_post_rope", i, layer.rotate(q, cos, sin))
        k = point("k_post_rope", i, layer.rotate(k, cos, sin))
        if self._cache is not None:  # decode: attend over every cached position
            k, v = self._cache.extend(i, k, v, written=layer.cache_writes)
        attn = point("attention", i, self.attention(i, q, k, v, layer.heads, point, self._past))  # [S, NH*D]
        o = point("attn_out", i, F.linear(attn, w.wo))
        if w.post_attn_norm is not None:
            o = point("post_attn_norm", i, self._rms_norm(o, w.post_attn_norm), o)
        o = _scaled(o, layer.residual_scale)
        x = point("post_attn_residual", i, x + o, o)

        h = point("ffn_norm", i, self._rms_norm(x, w.ffn_norm))
        if w.router is not None:
            down = point("moe_out", i, blocks.moe(
                h, x, w.router, w.experts_gu, w.experts_down, cfg.num_experts_per_tok, cfg.norm_topk_prob,
                layer.act, i, point, layer.routing, weights_float32=cfg.family.router_weights_float32))
        else:
            down = self._mlp(layer, h, point)
        if w.post_ffn_norm is not None:
            down = point("post_ffn_norm", i, self._rms_norm(down, w.post_ffn_norm), down)
        down = _scaled(down, layer.residual_scale)
        return point("post_ffn_residual", i, x + down, down)

    def _mlp(self, layer: LayerSpec, h: torch.Tensor, point: Points) -> torch.Tensor:
        """gate|up -> activation(gate) * up -> down (SwiGLU, or GeGLU with tanh-GELU)."""
        F = torch.nn.functional
        i, w, inter = layer.index, layer.weights, self.config.intermediate_size
        gu = F.linear(h, w.wgu)
        gate = point("ffn_gate", i, gu[:, :inter])
        up = point("ffn_up", i, gu[:, inter:])
        activated, other = layer.gated(gate, up)
        act = point("ffn_silu", i, layer.act(activated))
        sw = point("ffn_swiglu", i, act * other)
        return point("ffn_out", i, F.linear(sw, w.wdown))


def _scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x * factor`` (a Python float, as transformers multiplies), or ``x`` itself where it is 1."""
    return x if factor == 1.0 else x * factor


class _RopeTables:
    """cos/sin [S, 1, D] per frequency set and start position, in the compute dtype, computed in float32
    on first use in a forward."""

    def __init__(self, inv_freqs: dict[tuple[str, float], torch.Tensor], seq_len: int, past: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.inv_freqs, self.seq_len, self.past = inv_freqs, seq_len, past
        self.dtype, self.device = dtype, device
        self._made: dict[tuple[tuple[str, float], int], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, layer: LayerSpec) -> tuple[torch.Tensor, torch.Tensor]:
        start = 0 if layer.rope_from_step else self.past
        key = (layer.rope, start)
        if key not in self._made:
            pos = torch.arange(start, start + self.seq_len, device=self.device, dtype=torch.float32)
            freqs = pos[:, None] * self.inv_freqs[layer.rope][None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            self._made[key] = (emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :])
        return self._made[key]


def load(model: LoadedModel, settings: Settings) -> Engine:
    """The registry's factory (``pv.capture.runners``)."""
    return Engine(model, device=settings.device, dtype=settings.dtype, fault=settings.fault)
