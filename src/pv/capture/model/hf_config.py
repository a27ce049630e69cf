"""Hugging Face ``config.json`` <-> ``ModelConfig``, for every family in the registry.

``config_from_hf`` reads a ``config.json``; ``to_hf_dict`` is the one mapping the
other way, for the ``config.json`` pv writes (``export``) and for the
transformers config the oracle builds (``oracle.build``: ``from_dict`` of the same
dictionary, as transformers reads a checkpoint). What a family adds is data in
its row of ``arch`` (its own keys, their defaults, keys with fixed values, the
activation's key, the expert keys), never a test of its name here.

What the engine cannot compute (an unknown activation, a RoPE scaling type it
lacks, logit soft-capping, a MoE model with dense layers between sparse ones)
is refused here with one line, before any weight is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pv.capture.model import arch
from pv.capture.model.config import ModelConfig
from pv.errors import PvError, brief


def _rope(data: Mapping[str, Any], source: str, layer_type: str) -> tuple[float | None, dict[str, Any] | None]:
    """(theta, scaling) for one layer type from ``rope_parameters`` or the older flat fields."""
    params = data.get("rope_parameters")
    if isinstance(params, Mapping) and layer_type in params and isinstance(params[layer_type], Mapping):
        params = params[layer_type]  # transformers 5: one entry per layer type (Gemma 3)
    elif isinstance(params, Mapping) and any(isinstance(v, Mapping) for v in params.values()):
        params = None
    rope = params if isinstance(params, Mapping) else (data.get("rope_scaling") or {})
    if not isinstance(rope, Mapping):
        raise PvError(f"{source}: rope_scaling must be a mapping")
    rope_type = str(rope.get("rope_type", rope.get("type", "default")) or "default")
    if rope_type not in arch.ROPE_TYPES:
        raise PvError(f"{source}: rope scaling '{rope_type}' is not supported by the engine "
                      f"(supported: {', '.join(arch.ROPE_TYPES)})")
    theta = rope.get("rope_theta")
    scaling = None
    if rope_type != "default":
        keys = ("factor",) if rope_type == "linear" else (
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        try:
            scaling = {"rope_type": rope_type, **{k: float(rope[k]) for k in keys}}
            if "original_max_position_embeddings" in keys:
                scaling["original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
        except (KeyError, TypeError, ValueError):
            raise PvError(f"{source}: rope scaling '{rope_type}' needs {', '.join(keys)}") from None
    return (None if theta is None else float(theta)), scaling


def _layer_types(data: Mapping[str, Any], family: arch.Family, n_layers: int, source: str) -> tuple[str, ...]:
    given = data.get("layer_types")
    if given is not None:
        if not isinstance(given, list) or len(given) != n_layers:
            raise PvError(f"{source}: layer_types must list one type per layer ({n_layers})")
        return tuple(str(t) for t in given)
    if family.mask != "layer_pattern":
        return ()
    pattern = int(data.get("sliding_window_pattern", 6) or 6)
    return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                 for i in range(n_layers))


def config_from_hf(data: Mapping[str, Any], source: str) -> ModelConfig:
    """Map a transformers ``config.json`` onto ``ModelConfig``; refuse what the engine lacks."""
    family = arch.get(str(data.get("model_type", "")).lower(), source)
    act_name = data.get("hidden_activation") or data.get("hidden_act") or family.activation
    act = arch.ACTIVATIONS.get(str(act_name))
    if act is None:
        raise PvError(f"{source}: activation '{act_name}' is not supported "
                      f"(supported: {', '.join(sorted(arch.ACTIVATIONS))})")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if data.get(key) is not None:
            raise PvError(f"{source}: {key} is not supported by the engine")
    for where in (data, data.get("rope_parameters"), data.get("rope_scaling")):
        factor = where.get("partial_rotary_factor", 1.0) if isinstance(where, Mapping) else 1.0
        if factor is not None and factor != 1.0:
            raise PvError(f"{source}: partial_rotary_factor {brief(factor)} (RoPE on part of each head) "
                          f"is not supported by the engine")
    if family.qkv_bias == "never" and data.get("attention_bias"):
        raise PvError(f"{source}: attention_bias is set, but {family.hf_model_class} has no q/k/v biases")
    if data.get("use_sliding_window") and family.mask == "causal":
        raise PvError(f"{source}: use_sliding_window on {family.name} is not supported by the engine")
    try:
        hidden = int(data["hidden_size"])
        heads = int(data["num_attention_heads"])
        n_layers = int(data["num_hidden_layers"])
        theta, scaling = _rope(data, source, "full_attention")
        local_theta, _ = _rope(data, source, "sliding_attention")
        if theta is None:
            theta = float(data.get("rope_theta", 10000.0))
        if family.mask == "layer_pattern":
            local_theta = local_theta if local_theta != theta else None
            local_theta = float(data.get("rope_local_base_freq", local_theta or 10000.0))
        else:
            local_theta = None
        window = data.get("sliding_window") if family.mask != "causal" else None
        moe: dict[str, Any] = {}
        if family.moe:
            if data.get("mlp_only_layers") or int(data.get("decoder_sparse_step", 1) or 1) != 1:
                raise PvError(f"{source}: MoE models with dense layers between sparse ones are not supported")
            keys = family.moe_config_keys
            moe = {
                "num_experts": int(data[keys["num_experts"]]),
                "num_experts_per_tok": int(data["num_experts_per_tok"]),
                "moe_intermediate_size": int(data[keys["moe_intermediate_size"]]),
                # a family whose config has no such key always renormalises (Mixtral)
                "norm_topk_prob": bool(data.get("norm_topk_prob", True)) if "norm_topk_prob" in keys else True,
            }
        own: dict[str, Any] = {}
        for name, key in family.config_keys.items():  # the family's own scalars
            value = data.get(key, family.config_defaults.get(name))
            if value is not None:
                own[name] = float(value)
        return ModelConfig(
            architecture=family.name,
            vocab_size=int(data["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(data.get("intermediate_size") or 0),
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(data.get("head_dim") or hidden // heads),
            rope_theta=float(theta),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings",
                                              family.config_defaults.get("tie_word_embeddings", False))),
            # Qwen2 always has q/k/v biases; the others only when their config says so.
            attention_bias=True if family.qkv_bias == "always" else bool(data.get("attention_bias", False)),
            max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
            hidden_act=act,
            sliding_window=None if window is None else int(window),
            layer_types=_layer_types(data, family, n_layers, source),
            rope_local_theta=local_theta,
            rope_scaling=scaling,
            **own,
            **moe,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PvError):
            raise
        raise PvError(f"{source}: config.json lacks or garbles a field: {exc}") from None


def to_hf_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` of a model like ``cfg`` (what ``config_from_hf`` reads back, and what
    the oracle's transformers config is built from)."""
    family = cfg.family
    out: dict[str, Any] = {
        "model_type": family.name,
        "architectures": [family.hf_model_class],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "torch_dtype": "float32",
        # no special tokens: they are the tokenizer's (and a class's defaults may lie outside
        # a small vocabulary, as Phi-3's 32000 does); generate never stops early on them
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        family.hf_act_key: "gelu_pytorch_tanh" if cfg.hidden_act == "gelu_tanh" else "silu",
    }
    if cfg.rope_scaling is not None:
        out["rope_scaling"] = dict(cfg.rope_scaling)
    if family.mask != "causal":  # null too: transformers' own default window is not the model's
        out["sliding_window"] = cfg.sliding_window
    if cfg.layer_types:
        out["layer_types"] = list(cfg.layer_types)
    if cfg.rope_local_theta is not None:
        out["rope_local_base_freq"] = cfg.rope_local_theta
    for name, key in family.config_keys.items():
        value = getattr(cfg, name)
        if value is not None:  # a whole number as JSON writes it (transformers types some as int)
            out[key] = int(value) if float(value).is_integer() else value
    out.update({key: list(v) if isinstance(v, (list, tuple)) else v for key, v in family.config_fixed.items()})
    if family.moe:
        out.update({key: getattr(cfg, name) for name, key in family.moe_config_keys.items()})
        out["num_experts_per_tok"] = cfg.num_experts_per_tok
    return out


def stack_experts(sd: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Per-expert checkpoint tensors (``mlp.experts.E.gate_proj.weight``) -> pv's stacked ones.

    transformers 5 saves fused ``mlp.experts.gate_up_proj`` [E, 2I, H]; both become
    ``mlp.experts.{gate,up,down}_proj.weight`` [E, ...]. A family whose hub checkpoints
    name the block and the expert matrices otherwise (Mixtral: ``block_sparse_moe``,
    ``w1``/``w3``/``w2``) is read under those names too (``Family.hf_moe_block``,
    ``Family.hf_expert_parts``).
    """
    out = dict(sd)
    family = cfg.family
    for layer in range(cfg.num_hidden_layers):
        if family.hf_moe_block != "mlp":
            src = f"model.layers.{layer}.{family.hf_moe_block}."
            for name in [n for n in out if n.startswith(src)]:
                out[f"model.layers.{layer}.mlp.{name[len(src):]}"] = out.pop(name)
        p = f"model.layers.{layer}.mlp.experts."
        fused = out.pop(p + "gate_up_proj", None)
        if fused is not None:
            half = fused.shape[1] // 2
            out[p + "gate_proj.weight"] = np.ascontiguousarray(fused[:, :half])
            out[p + "up_proj.weight"] = np.ascontiguousarray(fused[:, half:])
            if p + "down_proj" in out:
                out[p + "down_proj.weight"] = out.pop(p + "down_proj")
            continue
        for part in ("gate_proj", "up_proj", "down_proj"):
            for stored in dict.fromkeys((part, family.hf_expert_parts.get(part, part))):
                names = [f"{p}{e}.{stored}.weight" for e in range(cfg.num_experts)]
                if all(n in out for n in names):
                    out[f"{p}{part}.weight"] = np.stack([out.pop(n) for n in names])
                    break
    return out
