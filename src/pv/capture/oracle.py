"""The reference: transformers' own Llama/Qwen2 modules, captured stage by stage.

``HFOracle`` builds ``LlamaForCausalLM`` or ``Qwen2ForCausalLM`` from a
transformers config derived from the same ``ModelConfig`` and loads the same
float32 state dict the engine runs, so a difference between the two captures is
a difference in arithmetic, never in weights.

How each stage is obtained (recorded per file as ``provenance`` and for the run
under ``provenance`` in the manifest; ``docs/oracle.md`` explains why):

- *Observed* values are tensors transformers itself computed and used: module
  outputs seen by forward hooks (embedding, norms, projections, activation,
  layer outputs, logits), module inputs seen by the same hooks
  (``post_attn_residual`` is the input of ``post_attention_layernorm``,
  ``ffn_swiglu`` the input of ``down_proj``), and the arguments and results of
  the attention function: queries/keys after RoPE (keys not repeated for GQA),
  the post-softmax weights and the attention output.
- *Recomputed* values are not materialised by transformers, so they are
  rebuilt from observed neighbours with the same expression: ``attn_scores``
  (``q·kᵀ·scaling`` before the mask, the first line of transformers' eager
  attention), and ``qkv_matmul`` for models with a q/k/v bias (``x @ Wᵀ`` of the
  projections' observed input, without the bias).

The attention internals come from a function registered under
``pv_capture`` with ``transformers.AttentionInterface`` (and the eager causal
mask under the same name with ``AttentionMaskInterface``) and chosen with
``attn_implementation``; it calls the model family's own
``eager_attention_forward`` for the values the model uses. No transformers
module or method is replaced. Hooks and the active capture live only inside a
context manager that removes them in ``finally``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pv.capture.config import ModelConfig
from pv.capture.models import LoadedModel
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch

#: The name under which pv's capturing attention is registered with transformers.
ATTN_IMPLEMENTATION = "pv_capture"

OBSERVED = "observed"
RECOMPUTED = "recomputed"

HF_CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}

#: The capture that the attention function reports to; set only inside ``HFOracle._capturing``.
_ACTIVE: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("pv_oracle_capture",
                                                                           default=None)


def provenance(config: ModelConfig) -> dict[str, str]:
    """Stage name -> ``observed`` or ``recomputed`` for the oracle on a model like ``config``."""
    from pv import stages

    out = {s.name: OBSERVED for s in stages.STAGES if stages.applies(s, config.features)}
    out["attn_scores"] = RECOMPUTED
    if config.attention_bias:
        out["qkv_matmul"] = RECOMPUTED
    return out


def _capturing_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         scaling: float, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, Any]:
    """transformers' eager attention for this model family, with its inputs and outputs tapped.

    ``query`` is [B, NH, S, D] and ``key`` [B, KVH, S, D], both after RoPE; the
    returned weights are the post-mask, post-softmax probabilities that produced
    the returned output [B, S, NH, D].
    """
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = eager(module, query, key, value, attention_mask, scaling=scaling,
                         dropout=dropout, **kwargs)
    capture = _ACTIVE.get()
    if capture is not None:
        capture.attention(int(module.layer_idx), query, key, scaling, weights, out,
                          int(module.num_key_value_groups))
    return out, weights


def _register(transformers: Any) -> None:
    """Register pv's attention and its (eager, causal) mask under ``ATTN_IMPLEMENTATION``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _capturing_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


@dataclass
class _Capture:
    """Routes hooked tensors to the tap in computation order, with their provenance."""

    tap: Any
    prov: dict[str, str]
    has_bias: bool
    pending_silu: dict[int, Any] = field(default_factory=dict)
    qkv: dict[int, dict[str, Any]] = field(default_factory=dict)

    def emit(self, stage: str, layer: int | None, tensor: Any) -> None:
        if not self.tap.wants(stage, layer):
            return
        how = self.prov[stage]
        meta: dict[str, Any] = {"provenance": how}
        if how == RECOMPUTED:
            meta["recomputed"] = True
        self.tap(stage, layer, tensor, **meta)

    def wants(self, stage: str, layer: int | None) -> bool:
        return bool(self.tap.wants(stage, layer))

    def attention(self, layer: int, query: Any, key: Any, scaling: float, weights: Any, out: Any,
                  groups: int) -> None:
        import torch

        self.emit("q_post_rope", layer, query[0].transpose(0, 1))
        # With a cache, ``key`` holds every cached position: the stage is this step's keys.
        self.emit("k_post_rope", layer, key[0][:, -query.shape[2]:].transpose(0, 1))
        if self.wants("attn_scores", layer):
            k_rep = key[0].repeat_interleave(groups, dim=0) if groups > 1 else key[0]
            self.emit("attn_scores", layer, torch.matmul(query[0], k_rep.transpose(1, 2)) * scaling)
        if weights is not None:
            self.emit("attn_softmax", layer, weights[0])
        elif self.wants("attn_softmax", layer):
            raise PvError("the attention function returned no weights to capture")
        s = out.shape[1]
        self.emit("attention", layer, out[0].reshape(s, -1))


@contextlib.contextmanager
def _skipping_init() -> Iterator[None]:
    """Skip transformers' random weight initialisation (seconds for 135M parameters).

    Buffers such as RoPE's inverse frequencies are still computed; parameters
    are allocated but left for ``_load`` to fill, and ``_load`` refuses any it
    cannot fill.
    """
    import importlib

    no_init_weights: Any = contextlib.nullcontext
    for where in ("transformers.initialization", "transformers.modeling_utils"):  # new, old
        found = getattr(importlib.import_module(where), "no_init_weights", None)
        if found is not None:
            no_init_weights = found
            break
    with no_init_weights():
        yield


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


class HFOracle:
    """transformers' forward on pv's weights, with the Tap protocol of the engine."""

    def __init__(self, model: LoadedModel, device: str = "cpu", dtype: str = "float32",
                 device_map: Any = None, offload_dir: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        torch = require("torch")
        transformers = require("transformers")
        from pv.capture.engine import resolve_device, torch_dtype

        self.torch = torch
        self.loaded = model
        self.config = cfg = model.config
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        self.dtype_name = dtype.strip().lower()
        if cfg.architecture not in HF_CLASSES:
            raise PvError(f"the transformers oracle has no class for architecture '{cfg.architecture}'")
        _register(transformers)
        self.hf_config = hf_config(cfg, transformers)
        model_cls = getattr(transformers, HF_CLASSES[cfg.architecture][1])
        with _skipping_init():  # every parameter is overwritten by _load
            self.model = model_cls(self.hf_config)
        self._load(model.state_dict)
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.device_map = None
        if device_map is not None:
            self.device_map = dispatch(self.model, device_map, self.device, offload_dir)
        self.provenance = provenance(cfg)

    # ------------------------------------------------------------------ public API

    def forward(self, token_ids: Sequence[int], tap: Any = None) -> torch.Tensor:
        """Logits [S, V] float32; ``tap`` receives the requested stages with their provenance."""
        ids = self._ids(token_ids)
        with self.torch.inference_mode(), self._capturing(tap):
            out = self.model(input_ids=ids, use_cache=False)
        logits: torch.Tensor = out.logits[0].float()
        return logits

    def start(self) -> Any:
        """An empty transformers ``DynamicCache`` for ``decode``."""
        from transformers import DynamicCache

        return DynamicCache()

    def decode(self, token_ids: Sequence[int], cache: Any, tap: Any = None) -> torch.Tensor:
        """New tokens on top of transformers' own KV cache; logits [S_new, V] float32.

        The first call on an empty cache is the prefill. Scores and probabilities
        of a decode step span every cached position: ``[NH, S_new, P + S_new]``.
        """
        ids = self._ids(token_ids)
        with self.torch.inference_mode(), self._capturing(tap):
            out = self.model(input_ids=ids, use_cache=True, **{self._cache_arg(): cache})
        logits: torch.Tensor = out.logits[0].float()
        return logits

    def _cache_arg(self) -> str:
        """``cache`` in newer transformers, ``past_key_values`` before it."""
        import inspect

        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation by transformers' own ``generate`` (no sampling, no early stop)."""
        from transformers import GenerationConfig

        ids = self._ids(token_ids)
        gen = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
            eos_token_id=None, pad_token_id=0, use_cache=True,
        )
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids),
                                      generation_config=gen)
        return [int(t) for t in out[0, ids.shape[1]:].tolist()]

    def run_summary(self, stages: Sequence[str] | None = None) -> dict[str, list[str]]:
        """The manifest's run-level record: which of ``stages`` were observed, which recomputed."""
        names = list(self.provenance) if stages is None else [s for s in stages if s in self.provenance]
        return {
            OBSERVED: [s for s in names if self.provenance[s] == OBSERVED],
            RECOMPUTED: [s for s in names if self.provenance[s] == RECOMPUTED],
        }

    # ------------------------------------------------------------------ internals

    def _ids(self, token_ids: Sequence[int]) -> torch.Tensor:
        ids = [int(i) for i in token_ids]
        if not ids:
            raise PvError("no tokens to run")
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise PvError(f"token id {bad[0]} out of range for a vocabulary of {self.config.vocab_size}")
        tensor: torch.Tensor = self.torch.tensor([ids], dtype=self.torch.long, device=self.device)
        return tensor

    def _load(self, state_dict: Any) -> None:
        """Copy pv's float32 weights into the module; refuse anything that does not fit."""
        torch = self.torch
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
                   for k, v in state_dict.items()}
        own = self.model.state_dict()
        # Modules transformers gives a bias the pv model does not have (Llama's o_proj
        # when attention_bias is set, Qwen2's q/k/v when the weights carry none) get zeros.
        for name, param in own.items():
            if name not in tensors and name.endswith(".bias"):
                tensors[name] = torch.zeros(param.shape, dtype=torch.float32)
        result = self.model.load_state_dict(tensors, strict=False)
        missing = [k for k in result.missing_keys
                   if not (k == "lm_head.weight" and self.config.tie_word_embeddings)]
        if missing or result.unexpected_keys:
            what = missing[0] if missing else result.unexpected_keys[0]
            raise PvError(f"{self.loaded.source}: weights do not fit transformers' "
                          f"{type(self.model).__name__} (first mismatch: {what})")
        if self.config.tie_word_embeddings:
            self.model.tie_weights()
            if self.model.lm_head.weight.data_ptr() != self.model.model.embed_tokens.weight.data_ptr():
                raise PvError("transformers did not tie lm_head to the embeddings")

    @contextlib.contextmanager
    def _capturing(self, tap: Any) -> Iterator[None]:
        """Install forward hooks and the attention capture for one forward; always remove them."""
        if tap is None:
            yield
            return
        capture = _Capture(tap, self.provenance, self.config.attention_bias)
        if not self.config.attention_bias:
            tap.not_applicable("qkv_bias", "the model has no q/k/v bias")
        self._record_run(tap)
        handles: list[Any] = []
        token = _ACTIVE.set(capture)
        try:
            self._install(capture, handles)
            yield
        finally:
            _ACTIVE.reset(token)
            for handle in handles:
                handle.remove()

    def _record_run(self, tap: Any) -> None:
        """Put the observed/recomputed lists into the run record the writer keeps, if any."""
        run = getattr(getattr(tap, "writer", None), "run", None)
        plan = getattr(tap, "plan", None)
        if isinstance(run, dict):
            names = None if plan is None else [s.name for s in plan.stages]
            run["provenance"] = self.run_summary(names)

    def _install(self, cap: _Capture, handles: list[Any]) -> None:
        torch = self.torch
        base = self.model.model

        def out_hook(stage: str, layer: int | None) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                cap.emit(stage, layer, _first(output)[0])
            return hook

        def add(module: Any, hook: Any) -> None:
            handles.append(module.register_forward_hook(hook))

        add(base.embed_tokens, out_hook("embedding", 0))
        for i, layer in enumerate(base.layers):
            attn, mlp = layer.self_attn, layer.mlp
            add(layer.input_layernorm, out_hook("attn_norm", i))

            def qkv_part(part: str, i: int = i, attn: Any = attn) -> Any:
                def hook(module: Any, args: Any, output: Any) -> None:
                    slot = cap.qkv.setdefault(i, {})
                    slot[part] = output[0]
                    if part != "v":
                        return
                    del cap.qkv[i]
                    fused = torch.cat([slot["q"], slot["k"], slot["v"]], dim=-1)
                    if not cap.has_bias:
                        cap.emit("qkv_matmul", i, fused)
                        return
                    if cap.wants("qkv_matmul", i):
                        w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                        cap.emit("qkv_matmul", i, torch.nn.functional.linear(args[0][0], w))
                    cap.emit("qkv_bias", i, fused)
                return hook

            if cap.wants("qkv_matmul", i) or cap.wants("qkv_bias", i):
                for part in "qkv":
                    add(getattr(attn, f"{part}_proj"), qkv_part(part))
            add(attn.o_proj, out_hook("attn_out", i))

            def post_attn(module: Any, args: Any, output: Any, i: int = i) -> None:
                cap.emit("post_attn_residual", i, args[0][0])
                cap.emit("ffn_norm", i, output[0])

            add(layer.post_attention_layernorm, post_attn)
            add(mlp.gate_proj, out_hook("ffn_gate", i))

            def silu(module: Any, args: Any, output: Any, i: int = i) -> None:
                cap.pending_silu[i] = output[0]  # emitted after ffn_up, in computation order

            def up(module: Any, args: Any, output: Any, i: int = i) -> None:
                cap.emit("ffn_up", i, output[0])
                if i in cap.pending_silu:
                    cap.emit("ffn_silu", i, cap.pending_silu.pop(i))

            add(mlp.act_fn, silu)
            add(mlp.up_proj, up)

            def down(module: Any, args: Any, output: Any, i: int = i) -> None:
                cap.emit("ffn_swiglu", i, args[0][0])
                cap.emit("ffn_out", i, output[0])

            add(mlp.down_proj, down)
            add(layer, out_hook("post_ffn_residual", i))
        add(base.norm, out_hook("final_norm", None))
        add(self.model.lm_head, out_hook("lm_head", None))


def dispatch(model: Any, device_map: Any, main_device: Any, offload_dir: str | None) -> dict[str, Any]:
    """Spread or offload the oracle with accelerate, as ``from_pretrained(device_map=...)`` does.

    ``device_map`` is ``"auto"`` or ``{module name: device}`` where a device is
    ``"cpu"``, ``"disk"``, ``"cuda:N"`` or an index; modules on ``"cpu"`` (when
    the main device is a GPU) or ``"disk"`` keep their weights off the main
    device and accelerate's hooks bring them in for each forward. Hooks pv adds
    for capture see the same module outputs, so captures stay comparable.
    """
    accelerate = require("accelerate")
    if device_map == "auto":
        device_map = accelerate.infer_auto_device_map(model)
    if not isinstance(device_map, dict) or not device_map:
        raise PvError("device_map must be 'auto' or a non-empty mapping of module name -> device")
    names = {n for n, _ in model.named_modules()}
    unknown = [k for k in device_map if k not in names]
    if unknown:
        raise PvError(f"device_map: no module named '{unknown[0]}' (e.g. model.layers.0, lm_head)")
    if "disk" in device_map.values() and offload_dir is None:
        raise PvError("device_map puts modules on 'disk': give an offload directory")
    accelerate.dispatch_model(model, device_map=device_map, main_device=str(main_device),
                              offload_dir=offload_dir)
    return dict(device_map)


def hf_config(cfg: ModelConfig, transformers: Any = None) -> Any:
    """A transformers ``LlamaConfig``/``Qwen2Config`` describing the same model as ``cfg``.

    The attention implementation is pv's capturing one; the causal mask is the
    eager one. Token ids for bos/eos are left unset so ``generate`` never stops
    early: parity compares a fixed number of greedy tokens.
    """
    transformers = transformers or require("transformers")
    if cfg.architecture not in HF_CLASSES:
        raise PvError(f"the transformers oracle has no class for architecture '{cfg.architecture}'")
    config_cls = getattr(transformers, HF_CLASSES[cfg.architecture][0])
    kwargs: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
    }
    if cfg.architecture == "llama":
        kwargs["attention_bias"] = cfg.attention_bias
        kwargs["mlp_bias"] = False
    else:
        kwargs["use_sliding_window"] = False
    config = config_cls(**kwargs)
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if theta is None:  # transformers before rope_parameters: the flat field
        config.rope_theta = float(cfg.rope_theta)
    config._attn_implementation = ATTN_IMPLEMENTATION
    return config
