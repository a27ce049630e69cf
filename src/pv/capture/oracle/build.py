"""Building transformers' model for a pv model: its config, its class, and an optional device map.

The config is derived from the same ``ModelConfig`` the engine runs (the
family's transformers config class, Gemma 3 with its per-layer-type RoPE
parameters, Qwen3-MoE with the eager experts loop), so a difference between
the oracle's and the engine's captures is a difference in arithmetic, never in
the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pv.capture.model import arch
from pv.capture.model.config import ModelConfig
from pv.capture.oracle.hooks import ATTN_IMPLEMENTATION
from pv.errors import PvError, require

HF_CLASSES = {f.name: (f.hf_config_class, f.hf_model_class) for f in arch.FAMILIES.values()}


@contextlib.contextmanager
def skipping_init() -> Iterator[None]:
    """Skip transformers' random weight initialisation (seconds for 135M parameters).

    Buffers such as RoPE's inverse frequencies are still computed; parameters
    are allocated but left for the oracle's loader to fill, which refuses any it
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
