"""The reference: transformers' own modules for each registered family, captured stage by stage.

``HFOracle`` builds the family's transformers class (``LlamaForCausalLM``,
``Qwen3ForCausalLM``, ``Gemma3ForCausalLM``, ... as the architecture registry
names it) from a transformers config derived from the same ``ModelConfig`` and
loads the same float32 state dict the engine runs, so a difference between the
two captures is a difference in arithmetic, never in weights.

Half precision: the model is cast with ``.to(dtype)``, which would also cast
the RoPE inverse-frequency buffers; the oracle puts them back in float32, as
``from_pretrained(dtype=...)`` leaves them and as the engine keeps them, so the
reference is "weights and activations in the dtype, RoPE frequencies in float32".

How each stage is obtained (recorded per file as ``provenance`` and for the run
under ``provenance`` in the manifest; ``docs/oracle.md`` explains why):

- *Observed* values are tensors transformers itself computed and used: module
  outputs seen by forward hooks (embedding, norms including q/k and sandwich
  norms, projections, activation, the MoE router's logits, chosen experts and
  weights, the MoE block's output, layer outputs, logits), module inputs seen by the same hooks
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

from pv.capture.model import arch
from pv.capture.model.config import ModelConfig
from pv.capture.model.loaded import LoadedModel
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch

#: The name under which pv's capturing attention is registered with transformers.
ATTN_IMPLEMENTATION = "pv_capture"

OBSERVED = "observed"
RECOMPUTED = "recomputed"

HF_CLASSES = {f.name: (f.hf_config_class, f.hf_model_class) for f in arch.FAMILIES.values()}

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
    #: transformers applies q/k norms to [B, NH, S, D] (Gemma 3) or [B, S, NH, D] (Qwen3).
    heads_first: bool = False
    #: Sliding window per windowed layer, recorded with its attention matrices.
    windows: dict[int, int] = field(default_factory=dict)
    pending_silu: dict[int, Any] = field(default_factory=dict)
    qkv: dict[int, dict[str, Any]] = field(default_factory=dict)

    def emit(self, stage: str, layer: int | None, tensor: Any) -> None:
        if not self.tap.wants(stage, layer):
            return
        how = self.prov[stage]
        meta: dict[str, Any] = {"provenance": how}
        if stage in ("attn_scores", "attn_softmax") and layer in self.windows:
            meta["mask"] = f"sliding_window:{self.windows[layer]}"
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
        from pv.capture.engine.runner import resolve_device, torch_dtype

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
        rope = {n: b.detach().clone() for n, b in self.model.named_buffers() if n.endswith("inv_freq")}
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self._restore_rope(rope)
        self.device_map = None
        if device_map is not None:
            self.device_map = dispatch(self.model, device_map, self.device, offload_dir)
        self.provenance = provenance(cfg)

    # ------------------------------------------------------------------ public API

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of the reference's numerics and mask policy."""
        torch = self.torch
        return {
            "kernels": {"attention": "transformers eager (pv_capture)", "rope_inv_freq": "float32",
                        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                        "float32_matmul_precision": torch.get_float32_matmul_precision()},
            "mask": self.config.mask_policy(),
        }

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

    def _restore_rope(self, saved: dict[str, Any]) -> None:
        """RoPE inverse frequencies back to float32 after a cast (see the module docstring).

        With GGUF per-frequency divisors (``rope_freqs``) the global frequencies are
        the file's: plain RoPE divided by them, as llama.cpp and the engine apply them.
        """
        factors = self.config.rope_freq_factors
        for name, value in saved.items():
            owner, _, attr = name.rpartition(".")
            module = self.model.get_submodule(owner)
            value = value.to(device=self.device, dtype=self.torch.float32)
            if factors is not None and not attr.startswith("sliding"):
                value = value / self.torch.tensor(factors, dtype=self.torch.float32, device=self.device)
            setattr(module, attr, value)

    def _load(self, state_dict: Any) -> None:
        """Copy pv's float32 weights into the module; refuse anything that does not fit."""
        torch = self.torch
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
                   for k, v in state_dict.items()}
        if self.config.family.moe:  # pv keeps gate and up apart; transformers fuses them
            for layer in range(self.config.num_hidden_layers):
                p = f"model.layers.{layer}.mlp.experts."
                gate, up = tensors.pop(p + "gate_proj.weight"), tensors.pop(p + "up_proj.weight")
                tensors[p + "gate_up_proj"] = torch.cat([gate, up], dim=1)
                tensors[p + "down_proj"] = tensors.pop(p + "down_proj.weight")
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
        cfg = self.config
        windows = {i: w for i in range(cfg.num_hidden_layers) if (w := cfg.layer_window(i)) is not None}
        capture = _Capture(tap, self.provenance, cfg.attention_bias,
                           heads_first=cfg.family.name == "gemma3_text", windows=windows)
        from pv import stages as stage_table

        for name, reason in stage_table.absent(cfg.features):
            tap.not_applicable(name, reason)
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

        roles = {role: name.rsplit(".", 1)[0] for role, name in self.config.family.roles(False).items()}
        add(base.embed_tokens, out_hook("embedding", 0))
        for i, layer in enumerate(base.layers):
            attn, mlp = layer.self_attn, layer.mlp
            add(layer.get_submodule(roles["attn_norm"]), out_hook("attn_norm", i))

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

            def head_norm(stage: str, i: int = i) -> Any:
                def hook(module: Any, args: Any, output: Any) -> None:
                    # [B, NH, S, D] (Gemma 3) or [B, S, NH, D] (Qwen3) -> [S, NH, D]
                    cap.emit(stage, i, output[0].transpose(0, 1) if cap.heads_first else output[0])
                return hook

            if "q_norm" in roles:
                add(layer.get_submodule(roles["q_norm"]), head_norm("q_norm"))
                add(layer.get_submodule(roles["k_norm"]), head_norm("k_norm"))
            add(attn.o_proj, out_hook("attn_out", i))
            if "post_attn_norm" in roles:
                add(layer.get_submodule(roles["post_attn_norm"]), out_hook("post_attn_norm", i))

            def pre_ffn(module: Any, args: Any, output: Any, i: int = i) -> None:
                cap.emit("post_attn_residual", i, args[0][0])
                cap.emit("ffn_norm", i, output[0])

            add(layer.get_submodule(roles["ffn_norm"]), pre_ffn)
            if "router" in roles:
                self._install_moe(cap, add, layer, i)
            else:
                self._install_mlp(cap, add, mlp, i)
            if "post_ffn_norm" in roles:
                add(layer.get_submodule(roles["post_ffn_norm"]), out_hook("post_ffn_norm", i))
            add(layer, out_hook("post_ffn_residual", i))
        add(base.norm, out_hook("final_norm", None))
        add(self.model.lm_head, out_hook("lm_head", None))

    @staticmethod
    def _install_mlp(cap: _Capture, add: Any, mlp: Any, i: int) -> None:
        def out_hook(stage: str) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                cap.emit(stage, i, _first(output)[0])
            return hook

        add(mlp.gate_proj, out_hook("ffn_gate"))

        def act(module: Any, args: Any, output: Any) -> None:
            cap.pending_silu[i] = output[0]  # emitted after ffn_up, in computation order

        def up(module: Any, args: Any, output: Any) -> None:
            cap.emit("ffn_up", i, output[0])
            if i in cap.pending_silu:
                cap.emit("ffn_silu", i, cap.pending_silu.pop(i))

        add(mlp.act_fn, act)
        add(mlp.up_proj, up)

        def down(module: Any, args: Any, output: Any) -> None:
            cap.emit("ffn_swiglu", i, args[0][0])
            cap.emit("ffn_out", i, output[0])

        add(mlp.down_proj, down)

    @staticmethod
    def _install_moe(cap: _Capture, add: Any, layer: Any, i: int) -> None:
        def router(module: Any, args: Any, output: Any) -> None:
            logits, weights, chosen = output  # [S, E], [S, K], [S, K]: batch and sequence flattened
            cap.emit("router_logits", i, logits)
            if cap.wants("moe_experts", i):
                cap.emit("moe_experts", i, chosen.float())
            cap.emit("moe_weights", i, weights)

        def block(module: Any, args: Any, output: Any) -> None:
            cap.emit("moe_out", i, _first(output)[0])

        add(layer.mlp.gate, router)
        add(layer.mlp, block)


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
    family = cfg.family
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    if cfg.rope_scaling is not None:
        rope.update(cfg.rope_scaling)
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
        "rope_parameters": rope,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
    }
    if family.name in ("llama", "mistral", "qwen3", "qwen3_moe"):
        kwargs["attention_bias"] = cfg.attention_bias
    if family.name == "llama":
        kwargs["mlp_bias"] = False
    if family.mask == "sliding_window":  # Mistral, Mixtral
        kwargs["sliding_window"] = cfg.sliding_window
    if family.name in ("qwen2", "qwen3", "qwen3_moe"):
        kwargs["use_sliding_window"] = False
    if family.moe:
        from pv.capture.model.hf_config import moe_config

        kwargs.update(moe_config(cfg), output_router_logits=False)
    if family.name == "gemma3_text":
        del kwargs["hidden_act"]
        local = {"rope_type": "default", "rope_theta": float(cfg.rope_local_theta or cfg.rope_theta)}
        kwargs.update(
            hidden_activation="gelu_pytorch_tanh", sliding_window=cfg.sliding_window,
            layer_types=list(cfg.layer_types) or None, query_pre_attn_scalar=int(cfg.query_pre_attn_scalar or cfg.head_dim),
            final_logit_softcapping=None, attn_logit_softcapping=None, attention_bias=cfg.attention_bias,
            rope_parameters={"full_attention": rope, "sliding_attention": local},
        )
    config = config_cls(**kwargs)
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_theta") is None and family.name != "gemma3_text":  # before rope_parameters
        config.rope_theta = float(cfg.rope_theta)
    config._attn_implementation = ATTN_IMPLEMENTATION
    if family.moe:  # the reference: transformers' per-expert loop, not a grouped kernel
        config._experts_implementation = "eager"
    return config


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
