"""Where weights come from: the built-in synthetic model, a Hugging Face directory, a GGUF file.

Every source ends up as the same ``LoadedModel``: a ``ModelConfig`` plus float32
numpy weights under Hugging Face parameter names. Engine and oracle both build
from it, so "same weights" is a fact about one object, pinned by a fingerprint
that the capture manifest records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pv.capture.config import SYNTHETIC, ModelConfig
from pv.errors import PvError, require

#: Architectures the engine implements (``config.json``'s ``model_type``).
SUPPORTED_ARCHITECTURES = ("qwen2", "llama")


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


def check_state_dict(config: ModelConfig, state_dict: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse weights that do not fit the config before any engine touches them."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q_out, kv_out = config.num_attention_heads * d, config.num_key_value_heads * d
    expected: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, h),
                                             "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        expected["lm_head.weight"] = (config.vocab_size, h)
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        expected[p + "input_layernorm.weight"] = (h,)
        expected[p + "post_attention_layernorm.weight"] = (h,)
        expected[p + "self_attn.q_proj.weight"] = (q_out, h)
        expected[p + "self_attn.k_proj.weight"] = (kv_out, h)
        expected[p + "self_attn.v_proj.weight"] = (kv_out, h)
        expected[p + "self_attn.o_proj.weight"] = (h, q_out)
        expected[p + "mlp.gate_proj.weight"] = (i, h)
        expected[p + "mlp.up_proj.weight"] = (i, h)
        expected[p + "mlp.down_proj.weight"] = (h, i)
        if config.attention_bias:
            expected[p + "self_attn.q_proj.bias"] = (q_out,)
            expected[p + "self_attn.k_proj.bias"] = (kv_out,)
            expected[p + "self_attn.v_proj.bias"] = (kv_out,)
    for name, shape in expected.items():
        if name not in state_dict:
            raise PvError(f"{source}: weight '{name}' is missing")
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise PvError(f"{source}: weight '{name}' has shape {list(got)}, expected {list(shape)}")


def synthetic_model() -> LoadedModel:
    from pv.capture.synthetic import synthetic_state_dict

    sd = synthetic_state_dict(SYNTHETIC)
    return LoadedModel(SYNTHETIC, sd, "synthetic", "synthetic", fingerprint(sd), ByteTokenizer())


def config_from_hf(data: Mapping[str, Any], source: str) -> ModelConfig:
    """Map a transformers ``config.json`` onto ``ModelConfig``; refuse what the engine lacks."""
    arch = str(data.get("model_type", "")).lower()
    if arch not in SUPPORTED_ARCHITECTURES:
        raise PvError(
            f"{source}: unsupported architecture '{arch or '?'}'; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    rope_type = str(rope.get("rope_type", rope.get("type", "default")) or "default")
    if rope_type != "default":
        raise PvError(f"{source}: rope scaling '{rope_type}' is not supported by the engine")
    if data.get("hidden_act", "silu") != "silu":
        raise PvError(f"{source}: activation '{data.get('hidden_act')}' is not supported (silu only)")
    try:
        hidden = int(data["hidden_size"])
        heads = int(data["num_attention_heads"])
        theta = rope.get("rope_theta", data.get("rope_theta", 10000.0))
        return ModelConfig(
            architecture=arch,
            vocab_size=int(data["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(data["intermediate_size"]),
            num_hidden_layers=int(data["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(data.get("head_dim") or hidden // heads),
            rope_theta=float(theta),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama only when its config says so.
            attention_bias=True if arch == "qwen2" else bool(data.get("attention_bias", False)),
            max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PvError(f"{source}: config.json lacks or garbles a field: {exc}") from None


def _read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PvError(f"{directory}: not a model directory (no config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PvError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise PvError(f"{path}: not a JSON object")
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
    path = Path(text)
    if not path.exists():
        raise PvError(f"model '{text}' not found (use 'synthetic', a HF model directory or a .gguf file)")
    if path.is_dir():
        return load_hf_directory(path)
    if path.suffix.lower() == ".gguf":
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime, st.st_size)
        if key not in _CACHE:
            try:
                from pv.capture.gguf_model import load_gguf
            except ImportError as exc:
                raise PvError(f"{path}: GGUF support is not available: {exc}") from None
            _CACHE.clear()
            _CACHE[key] = load_gguf(path)
        return _CACHE[key]
    raise PvError(f"{path}: not a model directory or a .gguf file")
