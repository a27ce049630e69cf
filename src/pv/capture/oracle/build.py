"""Building transformers' model for a pv model: its config, its class, and an optional device map.

The config is transformers' own reading (the family's config class,
``from_dict``) of the ``config.json`` pv writes for the same ``ModelConfig``
the engine runs (``pv.capture.model.hf_config.to_hf_dict``, the one mapping),
so a difference between the oracle's and the engine's captures is a difference
in arithmetic, never in the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pv.capture.model import arch
from pv.capture.model.config import ModelConfig
from pv.capture.oracle.hooks import ATTN_IMPLEMENTATION
from pv.errors import PvError, one_line, require

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
    """transformers' config of the model ``cfg`` describes: its ``config.json`` read by the family's class.

    The attention implementation is pv's capturing one (the causal mask the eager
    one), MoE experts run transformers' per-expert loop. Token ids for bos/eos/pad
    are unset (``to_hf_dict`` writes none) so ``generate`` never stops early:
    parity compares a fixed number of greedy tokens.
    """
    from pv.capture.model.hf_config import to_hf_dict

    transformers = transformers or require("transformers")
    family = cfg.family
    data = {**to_hf_dict(cfg), "use_cache": True}
    try:
        config = getattr(transformers, family.hf_config_class).from_dict(data)
    except Exception as exc:  # noqa: BLE001 - transformers' strict configs raise their own types
        raise PvError(f"transformers' {family.hf_config_class} refuses this model's config: "
                      f"{one_line(str(exc), 200)}") from None
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
