"""Mapping files: how another engine's tensor names and layouts become pv stages.

A mapping is YAML (``format: pv-mapping``, ``version: 1``) with a list of
rules. Each rule matches dumped tensor names with a regular expression (a
named group ``layer`` gives the layer of per-layer stages), names the pv stage
(and, for ``qkv_matmul``/``qkv_bias``, which of ``q``, ``k``, ``v`` the tensor
is), and lists the layout transforms that turn the dumped array into pv's
canonical layout (``docs/engines.md``). An optional ``tensor_parallel`` block
says how to find each dump file's rank and how many ranks there are; each rule
may override how its stage is unsharded. A mapping written for one engine graph
may name the model ``families`` its dumps come from (``--model`` of another
family is refused) and ``foreign`` names: regular expressions for tensors that
only another graph has, so that a dump holding one is refused instead of being
read with the wrong conversions. ``dtype:`` declares the engine's compute
dtype when its dump was upcast (``float16`` for a float16 engine that saved
float32 copies), and ``tokens:`` names the dump tensor holding the input ids
(``pv.capture.importer.declared``). Everything is checked when the file
is loaded, before any dump is read: an unknown stage, a bad regular
expression, a transform that does not exist or gets the wrong arguments is one
error naming the rule.

The shipped mappings live in ``pv/mappings/`` and are named by their stem
(``transformer_lens``, ``llama.cpp``, ``llama.cpp-gemma3``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import bounded
from pv import stages as stage_table
from pv.errors import PvError

FORMAT = "pv-mapping"
VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "mappings"

#: transform name -> kind of argument it takes.
TRANSFORMS: dict[str, str] = {
    "drop_batch": "none",  # remove a leading axis of size 1
    "select": "index",  # {axis: A, index: I}: take one slice along an axis
    "reshape": "dims",  # [S, -1] | [S, NH, D]: S is the leading axis, other names need --model
    "transpose": "axes",  # permutation of the axes
    "halves_from_pairs": "none",  # per head, ggml's pair order -> transformers' halves
    "crop_keys": "none",  # last axis cut to the key positions of this sequence
    "scale": "scale",  # a number, inv_sqrt_head_dim, or attention_scale (the model's score scale)
    "causal_fill": "number",  # entries above the diagonal (masked) set to this value
}
#: How tensor-parallel shards of each stage are put back together by default:
#: an axis of the canonical layout, ``qkv`` (each rank holds its own q|k|v
#: columns), or ``replicated`` (every rank holds the whole, all-reduced tensor).
DEFAULT_SHARDING: dict[str, str | int] = {
    "embedding": "replicated", "attn_norm": "replicated", "qkv_matmul": "qkv", "qkv_bias": "qkv",
    "q_post_rope": 1, "k_post_rope": 1, "attn_scores": 0, "attn_softmax": 0, "attention": 1,
    "attn_out": "replicated", "post_attn_residual": "replicated", "ffn_norm": "replicated",
    "ffn_gate": 1, "ffn_up": 1, "ffn_silu": 1, "ffn_swiglu": 1, "ffn_out": "replicated",
    "post_ffn_residual": "replicated", "final_norm": "replicated", "lm_head": 1,
    "q_norm": 1, "k_norm": 1, "post_attn_norm": "replicated", "post_ffn_norm": "replicated",
    # The router runs whole on every rank; the experts' sum is all-reduced.
    "router_logits": "replicated", "moe_experts": "replicated", "moe_weights": "replicated",
    "moe_out": "replicated",
}
DIM_NAMES = ("S", "H", "NH", "KVH", "D", "I", "V", "NHD", "QKV")


@dataclass(frozen=True)
class Transform:
    name: str
    arg: Any = None


@dataclass(frozen=True)
class Rule:
    index: int
    pattern: re.Pattern[str]
    stage: str
    part: str | None
    transforms: tuple[Transform, ...]
    shard: str | int
    #: ``stage: A|B``: the tensor holds these stages side by side, in equal parts of its last
    #: axis (Phi-3's fused gate|up); ``stage`` is then the first of them.
    together: tuple[str, ...] = ()

    def match(self, name: str) -> tuple[int | None] | None:
        """(layer,) when ``name`` matches this rule, else None."""
        m = self.pattern.fullmatch(name)
        if m is None:
            return None
        layer = m.groupdict().get("layer")
        return (int(layer) if layer is not None else None,)


@dataclass(frozen=True)
class TensorParallel:
    #: Regular expression with a named group ``rank``, searched in each dump file's path.
    rank_pattern: re.Pattern[str]
    size: int


@dataclass(frozen=True)
class Mapping:
    name: str
    source: str
    description: str
    rules: tuple[Rule, ...]
    tensor_parallel: TensorParallel | None = None
    #: pv model families whose dumps this mapping reads (empty: any).
    families: tuple[str, ...] = ()
    #: Tensor names (full match) a dump for this mapping never holds.
    foreign: tuple[re.Pattern[str], ...] = ()
    #: The engine's compute dtype, when its dump does not show it (upcast before saving).
    dtype: str | None = None
    #: The dump tensor (full match) holding the input token ids.
    tokens: re.Pattern[str] | None = None

    def is_foreign(self, tensor: str) -> bool:
        return any(p.fullmatch(tensor) for p in self.foreign)

    def rule_for(self, tensor: str) -> tuple[Rule, int | None] | None:
        for rule in self.rules:
            hit = rule.match(tensor)
            if hit is not None:
                return rule, hit[0]
        return None


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


def resolve(spec: str) -> Path:
    """A shipped mapping's name, or a path to a mapping file."""
    known = shipped()
    if spec in known:
        return known[spec]
    p = Path(spec)
    if p.is_file():
        return p
    raise PvError(f"mapping '{spec}': no such file, and not a shipped mapping "
                  f"({', '.join(known) or 'none'})")


#: A mapping file is a few dozen rules; anything near this is not one.
MAX_BYTES = 1 << 20


def load(spec: str) -> Mapping:
    """A shipped or user-written mapping, read through ``pv.bounded`` (size, depth,
    plain data, no repeated key) and checked rule by rule."""
    path = resolve(spec)
    data = bounded.load_data(path, "mapping file", limit=MAX_BYTES)
    return parse(data, str(path))


def _fail(where: str, message: str) -> PvError:
    return PvError(f"{where}: {message}")


def _transform(raw: Any, where: str) -> Transform:
    if isinstance(raw, str):
        name, arg = raw, None
    elif isinstance(raw, dict) and len(raw) == 1:
        name, arg = next(iter(raw.items()))
    else:
        raise _fail(where, "a transform is a name or a one-key mapping {name: argument}")
    kind = TRANSFORMS.get(str(name))
    if kind is None:
        raise _fail(where, f"unknown transform '{name}'; valid: {', '.join(TRANSFORMS)}")
    if kind == "none":
        if arg is not None:
            raise _fail(where, f"transform {name} takes no argument")
    elif kind == "index":
        if not (isinstance(arg, dict) and set(arg) == {"axis", "index"}
                and all(isinstance(v, int) for v in arg.values())):
            raise _fail(where, f"transform {name} takes {{axis: INT, index: INT}}")
    elif kind == "dims":
        if not (isinstance(arg, list) and arg and all(
                (isinstance(d, int) and (d > 0 or d == -1)) or d in DIM_NAMES for d in arg)):
            raise _fail(where, f"transform {name} takes a list of dims: positive ints, -1 or "
                               f"{', '.join(DIM_NAMES)}")
    elif kind == "axes":
        if not (isinstance(arg, list) and sorted(arg) == list(range(len(arg)))):
            raise _fail(where, f"transform {name} takes a permutation such as [1, 0, 2]")
    elif kind == "scale":
        if not (arg in ("inv_sqrt_head_dim", "attention_scale")
                or (isinstance(arg, (int, float)) and not isinstance(arg, bool))):
            raise _fail(where, f"transform {name} takes a number, inv_sqrt_head_dim or attention_scale")
    elif kind == "number" and not (isinstance(arg, (int, float)) and not isinstance(arg, bool)):
        raise _fail(where, f"transform {name} takes a number")
    return Transform(str(name), arg)


def _rule(raw: Any, index: int, where: str) -> Rule:
    here = f"{where}: rules[{index}]"
    if not isinstance(raw, dict):
        raise _fail(here, "a rule is a mapping with match, stage and optional part, transform, shard")
    unknown = set(raw) - {"match", "stage", "part", "transform", "shard"}
    if unknown:
        raise _fail(here, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if "match" not in raw or "stage" not in raw:
        raise _fail(here, "needs match (a regular expression) and stage")
    try:
        pattern = re.compile(str(raw["match"]))
    except re.error as exc:
        raise _fail(here, f"match is not a valid regular expression: {exc}") from None
    try:
        together = tuple(stage_table.get(s).name for s in str(raw["stage"]).split("|"))
    except PvError as exc:
        raise _fail(here, str(exc)) from None
    stage = stage_table.get(together[0])
    if len(together) > 1 and len({(stage_table.get(s).scope, stage_table.get(s).layout) for s in together}) > 1:
        raise _fail(here, f"stages {'|'.join(together)} side by side need one scope and one layout")
    has_layer = "layer" in pattern.groupindex
    if stage.scope == "layer" and not has_layer:
        raise _fail(here, f"stage {stage.name} is per layer: match needs a named group (?P<layer>\\d+)")
    if stage.scope == "model" and has_layer and stage.name != "embedding":
        raise _fail(here, f"stage {stage.name} is whole-model: match must not capture a layer")
    part = raw.get("part")
    if stage.name in ("qkv_matmul", "qkv_bias"):
        if part not in (None, "q", "k", "v"):
            raise _fail(here, f"part of {stage.name} is q, k or v (or absent for the fused q|k|v)")
    elif part is not None:
        raise _fail(here, f"part applies only to qkv_matmul and qkv_bias, not {stage.name}")
    if part is not None and len(together) > 1:
        raise _fail(here, "a part of one stage and stages side by side do not mix")
    steps = raw.get("transform") or []
    if not isinstance(steps, list):
        raise _fail(here, "transform is a list")
    transforms = tuple(_transform(t, f"{here}.transform[{i}]") for i, t in enumerate(steps))
    shard = raw.get("shard", DEFAULT_SHARDING[stage.name])
    if not (shard in ("replicated", "qkv") or (isinstance(shard, int) and not isinstance(shard, bool))):
        raise _fail(here, "shard is replicated, qkv or an axis number of the canonical layout")
    if isinstance(shard, int) and not -len(stage.layout) <= shard < len(stage.layout):
        raise _fail(here, f"shard axis {shard} is out of range for {stage.name} {list(stage.layout)}")
    return Rule(index, pattern, stage.name, part, transforms, shard, together if len(together) > 1 else ())


def parse(data: Any, where: str) -> Mapping:
    if not isinstance(data, dict):
        raise _fail(where, "a mapping file is a YAML mapping")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise _fail(where, f"not a pv mapping (needs format: {FORMAT} and version: {VERSION})")
    unknown = set(data) - {"format", "version", "name", "description", "rules", "tensor_parallel",
                           "families", "foreign", "dtype", "tokens"}
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise _fail(where, "rules must be a non-empty list")
    rules = tuple(_rule(r, i, where) for i, r in enumerate(rules_raw))
    tp = None
    if data.get("tensor_parallel") is not None:
        raw = data["tensor_parallel"]
        if not isinstance(raw, dict) or set(raw) != {"rank", "size"}:
            raise _fail(where, "tensor_parallel needs exactly rank (a regex with (?P<rank>\\d+)) "
                               "and size (the number of ranks)")
        try:
            rank_re = re.compile(str(raw["rank"]))
        except re.error as exc:
            raise _fail(where, f"tensor_parallel.rank is not a valid regular expression: {exc}") from None
        if "rank" not in rank_re.groupindex:
            raise _fail(where, "tensor_parallel.rank needs a named group (?P<rank>\\d+)")
        size = raw["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise _fail(where, "tensor_parallel.size must be a positive integer")
        tp = TensorParallel(rank_re, size)
    return Mapping(str(data.get("name") or Path(where).stem), where,
                   str(data.get("description") or ""), rules, tp,
                   _families(data.get("families"), where), _foreign(data.get("foreign"), where),
                   _dtype(data.get("dtype"), where), _tokens(data.get("tokens"), where))


def _dtype(raw: Any, where: str) -> str | None:
    from pv.capture.importer.declared import COMPUTE_DTYPES

    if raw is None:
        return None
    if raw not in COMPUTE_DTYPES:
        raise _fail(where, f"dtype: unknown dtype {bounded.brief(raw)}; valid: {', '.join(COMPUTE_DTYPES)}")
    return str(raw)


def _tokens(raw: Any, where: str) -> re.Pattern[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise _fail(where, "tokens is the name (a regular expression) of the dump tensor holding the token ids")
    try:
        return re.compile(raw)
    except re.error as exc:
        raise _fail(where, f"tokens is not a valid regular expression: {exc}") from None


def _families(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    from pv.capture.model.arch import FAMILIES

    if not isinstance(raw, list) or not raw or not all(isinstance(f, str) for f in raw):
        raise _fail(where, "families is a non-empty list of pv model families")
    unknown = [f for f in raw if f not in FAMILIES]
    if unknown:
        raise _fail(where, f"families: unknown family '{unknown[0]}'; valid: {', '.join(FAMILIES)}")
    return tuple(raw)


def _foreign(raw: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise _fail(where, "foreign is a list of regular expressions")
    out = []
    for i, p in enumerate(raw):
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise _fail(where, f"foreign[{i}] is not a valid regular expression: {exc}") from None
    return tuple(out)
