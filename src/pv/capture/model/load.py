"""Where weights come from: the built-in synthetic model, a Hugging Face directory, a GGUF file.

Every source ends up as the same ``LoadedModel``: a ``ModelConfig`` plus float32
numpy weights under Hugging Face parameter names. Engine and oracle both build
from it, so "same weights" is a fact about one object, pinned by a fingerprint
that the capture manifest records.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pv import bounded
from pv.capture.model import arch
from pv.capture.model.config import SYNTHETIC, ConfigValueError, ModelConfig
from pv.errors import PvError, require

#: Architectures the engine implements (``config.json``'s ``model_type``): the registry's families.
SUPPORTED_ARCHITECTURES = tuple(arch.FAMILIES)


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as token ids: the tokenizer of the 256-token synthetic model."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizer.json`` read with the ``tokenizers`` package (no special tokens added)."""

    def __init__(self, path: Path):
        tokenizers = require("tokenizers")
        self._tok = tokenizers.Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for an engine: config, float32 HF-named weights, provenance."""

    config: ModelConfig
    #: float32, Hugging Face names; no ``lm_head.weight`` when embeddings are tied.
    state_dict: Mapping[str, np.ndarray] = field(repr=False)
    source: str
    #: "synthetic" (seeded, built in) or "real".
    weights: str
    fingerprint: str
    tokenizer: Any = field(default=None, repr=False, compare=False)

    @property
    def architecture(self) -> str:
        return self.config.architecture

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the model."""
        return {
            "path": self.source,
            "architecture": self.architecture,
            "weights": self.weights,
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
        }


def fingerprint(state_dict: Mapping[str, np.ndarray]) -> str:
    """sha256 over sorted names, shapes, dtypes and bytes: equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        arr = np.ascontiguousarray(state_dict[name])
        digest.update(name.encode("utf-8"))
        digest.update(repr((tuple(arr.shape), arr.dtype.str)).encode("ascii"))
        digest.update(arr.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight a model of ``config`` has, by Hugging Face name, with its shape."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q_out, kv_out = config.num_attention_heads * d, config.num_key_value_heads * d
    e, mi = config.num_experts, config.moe_intermediate_size
    by_role: dict[str, tuple[int, ...]] = {
        "attn_norm": (h,), "q": (q_out, h), "k": (kv_out, h), "v": (kv_out, h), "o": (h, q_out),
        "q_bias": (q_out,), "k_bias": (kv_out,), "v_bias": (kv_out,), "q_norm": (d,), "k_norm": (d,),
        "post_attn_norm": (h,), "ffn_norm": (h,), "post_ffn_norm": (h,),
        "gate": (i, h), "up": (i, h), "down": (h, i), "router": (e, h),
        "experts_gate": (e, mi, h), "experts_up": (e, mi, h), "experts_down": (e, h, mi),
    }
    expected: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, h),
                                             "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        expected["lm_head.weight"] = (config.vocab_size, h)
    roles = config.family.roles(config.attention_bias)
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        for role, name in roles.items():
            expected[p + name] = by_role[role]
    return expected


def check_state_dict(config: ModelConfig, state_dict: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse weights that do not fit the config before any engine touches them."""
    for name, shape in expected_shapes(config).items():
        if name not in state_dict:
            raise PvError(f"{source}: weight '{name}' is missing")
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise PvError(f"{source}: weight '{name}' has shape {list(got)}, expected {list(shape)}")


def synthetic_model(family: str | None = None) -> LoadedModel:
    """The built-in model (Qwen2-style), or ``synthetic:FAMILY``: seeded weights in that family's shape."""
    from pv.capture.model.synthetic import family_config, synthetic_state_dict

    config = SYNTHETIC if family is None else family_config(family)
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
