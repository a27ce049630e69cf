"""Load a llama.cpp GGUF file as Hugging Face-named float32 weights.

GGUF stores llama.cpp's tensor names, ggml's quantised blocks and, for Llama,
query/key rows in the order llama.cpp's RoPE wants. pv's engine and the
transformers oracle both read Hugging Face names and the Hugging Face row order,
so the loader dequantises every tensor with the ``gguf`` package, renames it and
undoes the converter's Q/K row permutation. The architecture facts come from the
file's metadata (``llama.*`` / ``qwen2.*`` keys, and what each family's row of
``pv.capture.model.arch`` adds), the tokenizer from the
vocabulary and merges embedded in it (``pv.capture.model.tokenizer``).

Every way a file can be unusable (not a GGUF, an architecture or a quantisation
pv cannot run, a missing tensor) is a ``PvError`` with one line of text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pv import files
from pv.capture.model import arch as families
from pv.capture.model.config import ModelConfig
from pv.capture.model.fused import held, split
from pv.capture.model.gguf_reader import open_gguf
from pv.capture.model.loaded import LoadedModel, check_state_dict, expected_shapes, fingerprint
from pv.errors import PvError, require

if TYPE_CHECKING:
    from pv.capture.model.tokenizer import GGUFTokenizer

#: ``general.architecture`` values pv reads: the registry's families that name one.
ARCHITECTURES = tuple(dict.fromkeys(f.gguf_arch for f in families.FAMILIES.values() if f.gguf_arch))

_MAGIC = b"GGUF"

#: llama.cpp per-block tensor name -> Hugging Face name inside ``model.layers.N.``.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

#: Whole-model tensors.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
#: Mixtral GGUFs converted before llama.cpp stacked the experts (early 2024) hold one
#: tensor per expert, ``blk.N.ffn_gate.E.weight``; pv stacks them on load, as llama.cpp
#: did until it dropped the layout (the llama.cpp pv builds refuses such a file).
_EXPERT_RE = re.compile(r"^blk\.(\d+)\.(ffn_gate|ffn_up|ffn_down)\.(\d+)\.weight$")


@dataclass(frozen=True)
class GGUFContents:
    """What a GGUF file holds, already in pv's terms (before fingerprinting)."""

    config: ModelConfig
    state_dict: dict[str, np.ndarray]
    metadata: dict[str, Any]
    #: Quantisation type of each source tensor, by Hugging Face name ("Q4_1", "F32", ...).
    quant_types: dict[str, str]
    tokenizer: GGUFTokenizer | None


def hf_name(gguf_name: str, family: families.Family | None = None) -> str | None:
    """The Hugging Face parameter name for a llama.cpp tensor name, or None if pv has none."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _BLOCK_RE.match(gguf_name)
    if match is None:
        return None
    layer, part, kind = match.groups()
    if family is not None and part in family.gguf_fused:
        return gguf_name  # several roles in one tensor (Phi-3's attn_qkv): split once sizes are known
    if family is None:
        if part not in _BLOCK_NAMES:
            return None
        return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"
    role = families.GGUF_BLOCK_ROLES.get(part)
    names = family.roles(kind == "bias")
    key = role if kind == "weight" else f"{role}_bias"
    if role is None or key not in names:
        return None
    return f"model.layers.{layer}.{names[key]}"


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation for Llama.

    The converter reorders each head's rows from Hugging Face's rotate-half
    layout (first half of the head dim pairs with the second half) to ggml's
    interleaved layout (row 2i pairs with 2i+1): rows ``(head, half, i)`` become
    ``(head, i, half)``. Reading the interleaved order back as ``(head, i, half)``
    and swapping the last two axes restores Hugging Face's order. ``weight`` is
    ``[n_head * head_dim, ...]`` (a weight matrix or a bias vector).
    """
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise PvError(f"cannot unpermute {rows} rope rows into {n_head} heads of even size")
    half = rows // n_head // 2
    grouped = weight.reshape(n_head, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2).reshape(weight.shape))


def _check_magic(path: Path) -> None:
    try:
        with files.open_regular(path) as fh:  # a FIFO would block the open forever
            magic = fh.read(4)
    except FileNotFoundError:
        raise PvError(f"model file not found: {path}") from None
    except files.NotRegularFileError:
        if path.is_dir():
            raise PvError(f"{path} is a directory, not a GGUF file") from None
        raise PvError(f"{path} is not a regular file (a FIFO, device or socket), not a GGUF file") from None
    except IsADirectoryError:
        raise PvError(f"{path} is a directory, not a GGUF file") from None
    except OSError as exc:
        raise PvError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != _MAGIC:
        raise PvError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _short_float(value: float) -> float:
    """A float32 metadata value as the shortest decimal that round-trips in float32.

    GGUF stores ``1e-5`` as float32 (9.99999974e-06); reading it back as the
    decimal the model's own config.json carries keeps pv's and transformers'
    configs identical to the original model's.
    """
    return float(str(np.float32(value)))


def _config_from_metadata(reader: Any, arch: str, path: Path, vocab_rows: int,
                          has_output: bool, has_bias: bool,
                          rope_factors: tuple[float, ...] | None = None) -> ModelConfig:
    def need(key: str) -> Any:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise PvError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", heads))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", hidden // heads))
    rope_dims = _field(reader, f"{arch}.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != head_dim:
        raise PvError(
            f"{path}: partial rotary embedding ({rope_dims} of {head_dim} dims) is not supported"
        )
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise PvError(f"{path}: RoPE scaling '{scaling}' is not supported")
    vocab = int(_field(reader, f"{arch}.vocab_size", vocab_rows))
    if vocab != vocab_rows:
        raise PvError(f"{path}: metadata says vocab {vocab} but token_embd has {vocab_rows} rows")
    window = _field(reader, f"{arch}.attention.sliding_window")
    family = families.by_gguf_arch(arch, str(path), moe=_expert_count(reader, arch, path) > 0,
                                   windowed=window is not None)
    extra: dict[str, Any] = {"hidden_act": family.activation}
    if family.mask != "causal" and window is not None:
        extra["sliding_window"] = int(window)
    n_layers = int(need("block_count"))
    if family.mask == "layer_pattern":  # every pattern-th layer global (llama.cpp's default 6)
        pattern = int(_field(reader, f"{arch}.attention.sliding_window_pattern", 6))
        extra["layer_types"] = tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                     for i in range(n_layers))
    for name, (key, default) in family.gguf_keys.items():  # the family's own scalars
        value = _field(reader, f"{arch}.{key}", default)
        if value is None:
            raise PvError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        extra[name] = _short_float(value)
    if family.gguf_config is not None:
        try:
            extra.update(family.gguf_config(lambda key, default: _field(reader, key, default), arch, head_dim))
        except PvError as exc:
            raise PvError(f"{path}: {exc}") from None
    if family.moe:
        # llama.cpp writes Mixtral's expert size as feed_forward_length (no expert_ key)
        expert_ff = _field(reader, f"{arch}.expert_feed_forward_length")
        extra.update(num_experts=int(need("expert_count")), num_experts_per_tok=int(need("expert_used_count")),
                     moe_intermediate_size=int(need("feed_forward_length") if expert_ff is None else expert_ff),
                     norm_topk_prob=True)
    if rope_factors is not None:
        extra["rope_freq_factors"] = rope_factors
    return ModelConfig(
        architecture=family.name,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length", 0) or 0),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rope_theta=_short_float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=_short_float(need("attention.layer_norm_rms_epsilon")),
        tie_word_embeddings=not has_output,
        attention_bias=has_bias,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 2048)),
        **extra,
    )


def _expert_count(reader: Any, arch: str, path: Path) -> int:
    """``ARCH.expert_count`` (0 when absent): a ``llama`` GGUF with experts is a Mixtral."""
    value = _field(reader, f"{arch}.expert_count", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PvError(f"{path}: GGUF metadata '{arch}.expert_count' is not a number") from None


def _fused_name(layer: int, part: str) -> str:
    return f"blk.{layer}.{part}.weight"


def read_gguf(path: str | Path, *, with_tokenizer: bool = True) -> GGUFContents:
    """Parse, dequantise and rename everything pv needs from a GGUF file."""
    path = Path(path)
    _check_magic(path)
    gguf = require("gguf")
    from gguf.quants import dequantize

    reader = open_gguf(path)

    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise PvError(
            f"{path}: unsupported architecture '{arch}'; pv runs {', '.join(ARCHITECTURES)}"
        )

    supported = _supported_quant_types(gguf)
    family = families.by_gguf_arch(str(arch), str(path), moe=_expert_count(reader, str(arch), path) > 0,
                                   windowed=_field(reader, f"{arch}.attention.sliding_window") is not None)
    tensors: dict[str, Any] = {}
    per_expert: dict[str, dict[int, Any]] = {}
    rope_factors: tuple[float, ...] | None = None
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":  # llama3 RoPE scaling as per-frequency divisors
            values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(-1)
            rope_factors = tuple(float(x) for x in values)
            continue
        expert = _EXPERT_RE.match(tensor.name) if family.gguf_per_expert else None
        if expert is not None:
            layer, part, index = expert.groups()
            name = hf_name(f"blk.{layer}.{part}_exps.weight", family)
        else:
            name = hf_name(tensor.name, family)
        if name is None:
            raise PvError(f"{path}: tensor '{tensor.name}' has no place in a {arch} decoder")
        if tensor.tensor_type not in supported:
            raise PvError(
                f"{path}: tensor '{tensor.name}' uses quantisation {tensor.tensor_type.name}, "
                f"which pv cannot dequantise (supported: {', '.join(sorted(t.name for t in supported))})"
            )
        if expert is not None:
            per_expert.setdefault(name, {})[int(index)] = tensor
        else:
            tensors[name] = tensor
    for name, by_index in per_expert.items():
        if name in tensors:
            raise PvError(f"{path}: the experts of {name} are stored both stacked and one tensor per expert")
        tensors[name] = _expert_list(by_index, path)

    if "model.embed_tokens.weight" not in tensors:
        raise PvError(f"{path}: no token_embd.weight tensor")
    vocab_rows = int(tensors["model.embed_tokens.weight"].shape[-1])
    has_bias = any(n.endswith("_proj.bias") for n in tensors)
    config = _config_from_metadata(
        reader, arch, path, vocab_rows, "lm_head.weight" in tensors, has_bias, rope_factors
    )
    fused = {n: tensors.pop(n) for n in list(tensors) if n.startswith("blk.")}  # kept by hf_name
    holds = held(fused, config, family.gguf_fused, _fused_name)
    expected = set(expected_shapes(config))
    missing = sorted(expected - set(tensors) - set(holds))
    if missing:
        raise PvError(f"{path}: missing tensor {missing[0]} ({len(missing)} missing in all)")
    extra = sorted(set(tensors) - expected)
    if extra:
        raise PvError(f"{path}: unexpected tensor {extra[0]} for this configuration")

    state_dict: dict[str, np.ndarray] = {}
    quant_types: dict[str, str] = {}
    for name, tensor in tensors.items():
        if isinstance(tensor, list):  # one tensor per expert: stacked into [E, ...] as llama.cpp does
            values = np.stack([_dequantized(t, dequantize) for t in tensor])
            kinds = sorted({t.tensor_type.name for t in tensor})
            quant_types[name] = kinds[0] if len(kinds) == 1 else "+".join(kinds)
        else:
            values = _dequantized(tensor, dequantize)
            quant_types[name] = tensor.tensor_type.name
        if config.family.gguf_permuted_qk and (".q_proj." in name or ".k_proj." in name):
            heads = (config.num_attention_heads if ".q_proj." in name
                     else config.num_key_value_heads)
            values = unpermute_rope_rows(values, heads)
        if config.family.gguf_norm_shift and name.endswith("norm.weight"):
            values = values - np.float32(config.family.gguf_norm_shift)  # llama.cpp stored 1 + w
        state_dict[name] = values

    if fused:
        arrays = {n: _dequantized(tensor, dequantize) for n, tensor in fused.items()}
        state_dict.update(split(arrays, config, family.gguf_fused, _fused_name, str(path)))
        quant_types.update({n: fused[whole].tensor_type.name for n, whole in holds.items()})
    check_state_dict(config, state_dict, str(path))  # e.g. fewer experts stored than expert_count says
    metadata = {
        key: _field(reader, key)
        for key in reader.fields
        if not key.startswith("tokenizer.ggml.") and not key.startswith("GGUF.")
    }
    tokenizer = None
    if with_tokenizer:
        from pv.capture.model.tokenizer import tokenizer_from_gguf_fields

        tokenizer = tokenizer_from_gguf_fields(reader, path)
    return GGUFContents(config, state_dict, metadata, quant_types, tokenizer)


def has_per_expert_tensors(path: str | Path) -> bool:
    """Whether a GGUF file stores its experts one tensor each (False when it cannot be read)."""
    try:
        return any(_EXPERT_RE.match(t.name) for t in open_gguf(Path(path)).tensors)
    except PvError:  # open_gguf turns every failure into one
        return False


def _dequantized(tensor: Any, dequantize: Any) -> np.ndarray:
    """A GGUF tensor as a float32 array in row-major (Hugging Face) shape."""
    # np.array copies: F32 tensors come back as views into the memory map.
    values = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    return values.reshape(tuple(int(d) for d in reversed(tensor.shape)))  # ggml lists ne0 (columns) first


def _expert_list(by_index: dict[int, Any], path: Path) -> list[Any]:
    """Per-expert tensors in expert order: 0 .. E-1, each present once, all of one shape."""
    indices = sorted(by_index)
    if indices != list(range(len(indices))):
        gap = next(i for i in range(len(indices) + 1) if i not in by_index)
        raise PvError(f"{path}: per-expert tensors of {by_index[indices[0]].name.rsplit('.', 2)[0]} "
                      f"skip expert {gap}")
    shapes = {tuple(int(d) for d in by_index[i].shape) for i in indices}
    if len(shapes) > 1:
        raise PvError(f"{path}: per-expert tensors of {by_index[0].name.rsplit('.', 2)[0]} differ in shape")
    return [by_index[i] for i in indices]


def _supported_quant_types(gguf: Any) -> set[Any]:
    from gguf import quants

    q = gguf.GGMLQuantizationType
    traits = getattr(quants, "_type_traits", {})
    return {q.F32, q.F16} | set(traits)


def load_gguf(path: str | Path) -> LoadedModel:
    """A ``LoadedModel`` with real (dequantised) weights from a GGUF file."""
    contents = read_gguf(path)
    return LoadedModel(
        config=contents.config,
        state_dict=contents.state_dict,
        source=str(Path(path)),
        weights="real",
        fingerprint=fingerprint(contents.state_dict),
        tokenizer=contents.tokenizer,
    )
