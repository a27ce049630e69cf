"""Where weights come from: the built-in synthetic model, a Hugging Face directory, a GGUF file.

Every source ends up as the same ``LoadedModel`` (``pv.capture.model.loaded``): a
``ModelConfig`` plus float32 numpy weights under Hugging Face parameter names.
``model_config`` answers plan checks without loading weights where it can.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pv import bounded
from pv.capture.model import arch
from pv.capture.model.config import SYNTHETIC, ConfigValueError, ModelConfig
from pv.capture.model.loaded import LoadedModel, check_state_dict, fingerprint
from pv.capture.model.tokenizer import ByteTokenizer, HFTokenizer
from pv.errors import PvError, require

#: Architectures the engine implements (``config.json``'s ``model_type``): the registry's families.
SUPPORTED_ARCHITECTURES = tuple(arch.FAMILIES)


def synthetic_model(family: str | None = None) -> LoadedModel:
    """The built-in model (Qwen2-style), ``synthetic:FAMILY`` (seeded weights in that family's
    shape) or ``synthetic:FAMILY-SIZE`` (a real model's shape, each tensor drawn when read)."""
    from pv.capture.model.synthetic import SeededWeights, family_config, split_size, synthetic_state_dict

    config = SYNTHETIC if family is None else family_config(family)
    size = None if family is None else split_size(family)[1]
    if size is not None:
        seeded = SeededWeights(config)
        return LoadedModel(config, seeded, f"synthetic:{config.architecture}-{size}", "synthetic",
                           seeded.fingerprint(), ByteTokenizer())
    sd = synthetic_state_dict(config)
    name = "synthetic" if family is None else f"synthetic:{config.architecture}"
    return LoadedModel(config, sd, name, "synthetic", fingerprint(sd), ByteTokenizer())


def config_from_hf(data: Mapping[str, Any], source: str) -> ModelConfig:
    """Map a transformers ``config.json`` onto ``ModelConfig``; refuse what the engine lacks."""
    from pv.capture.model.hf_config import config_from_hf as mapped

    try:
        return mapped(data, source)
    except ConfigValueError as exc:  # an impossible value (zero heads, NaN theta): name the file
        raise PvError(f"{source}: config.json: {exc}") from None
    except PvError as exc:
        text = str(exc)
        if "\n" in text or "\r" in text:  # a value from the file echoed into the message
            raise PvError(bounded.one_line(text, 300)) from None
        raise
    except ArithmeticError as exc:  # e.g. hidden_size // 0 heads, int(Infinity)
        raise PvError(f"{source}: config.json holds an impossible value ({exc})") from None


#: A transformers config.json is a few KiB; these bounds leave room for any real one.
CONFIG_JSON_MAX_BYTES = 4 * 1024 * 1024
CONFIG_JSON_MAX_DEPTH = 16


def _read_config_json(directory: Path) -> dict[str, Any]:
    """``config.json`` as a dict: a regular file, bounded in size, depth and integer length."""
    path = directory / "config.json"
    if not os.path.lexists(path):
        raise PvError(f"{directory}: not a model directory (no config.json)")
    try:
        data = bounded.load_json(
            path, "model config", limit=CONFIG_JSON_MAX_BYTES, max_depth=CONFIG_JSON_MAX_DEPTH
        )
    except bounded.DataFileError as exc:
        raise PvError(f"unreadable model config: {exc}") from None
    if not isinstance(data, dict):
        raise PvError(f"{bounded.show_path(path)}: not a JSON object")
    return data


def _load_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    """All tensors as float32 numpy; bfloat16 goes through torch since numpy has no bf16."""
    safetensors = require("safetensors")
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            with safetensors.safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    t = handle.get_tensor(name)
                    out[name] = t.float().numpy()
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise PvError(f"{f}: cannot read safetensors: {exc}") from None
    return out


def load_hf_directory(directory: Path) -> LoadedModel:
    config = config_from_hf(_read_config_json(directory), str(directory))
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PvError(f"{directory}: no *.safetensors files")
    sd = _load_safetensors(files)
    if config.family.moe:
        from pv.capture.model.hf_config import stack_experts

        sd = stack_experts(sd, config)
    if config.family.hf_fused:  # Phi-3's qkv_proj and gate_up_proj: one tensor per role
        from pv.capture.model import fused

        sd = fused.split(sd, config, config.family.hf_fused, source=str(directory))
    if config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    check_state_dict(config, sd, str(directory))
    tokenizer = None
    if (directory / "tokenizer.json").is_file():
        tokenizer = HFTokenizer(directory / "tokenizer.json")
    return LoadedModel(config, sd, str(directory), "real", fingerprint(sd), tokenizer)


def model_config(spec: str) -> ModelConfig:
    """The config of a model without loading weights where that is possible (plan checks)."""
    if spec == "synthetic":
        return SYNTHETIC
    if spec.startswith("synthetic:"):
        from pv.capture.model.synthetic import family_config

        return family_config(spec.partition(":")[2])
    path = Path(spec)
    if path.is_dir():
        return config_from_hf(_read_config_json(path), str(path))
    return load_model(spec).config


_CACHE: dict[tuple[str, float, int], LoadedModel] = {}


def load_model(spec: str | os.PathLike[str]) -> LoadedModel:
    """``synthetic``, a HF model directory, or a ``.gguf`` file -> ``LoadedModel``.

    GGUF files are cached per (path, mtime, size) within a process because
    dequantising them is the slow part of a falsifier run that captures twice.
    """
    text = str(spec)
    if text == "synthetic":
        return synthetic_model()
    if text.startswith("synthetic:"):
        return synthetic_model(text.partition(":")[2])
    path = Path(text)
    if not path.exists():
        raise PvError(f"model '{text}' not found (use 'synthetic', 'synthetic:FAMILY', a HF model directory "
                      "or a .gguf file)")
    if path.is_dir():
        return load_hf_directory(path)
    if path.suffix.lower() == ".gguf":
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime, st.st_size)
        if key not in _CACHE:
            try:
                from pv.capture.model.gguf import load_gguf
            except ImportError as exc:
                raise PvError(f"{path}: GGUF support is not available: {exc}") from None
            _CACHE.clear()
            try:
                _CACHE[key] = load_gguf(path)
            except ConfigValueError as exc:
                raise PvError(f"{path}: GGUF metadata: {exc}") from None
        return _CACHE[key]
    raise PvError(f"{path}: not a model directory or a .gguf file")
