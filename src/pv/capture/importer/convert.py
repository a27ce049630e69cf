"""``pv import``: tensors dumped by any engine, turned into an APRT capture through a mapping.

The steps: read every dump file (``pv.capture.importer.dumps``, no pickle), find each
file's tensor-parallel rank when the mapping has a ``tensor_parallel`` block,
match every tensor name against the mapping's rules (first match wins), apply
the rule's layout transforms to each shard, put the shards back together along
the stage's axis (or check that replicated shards agree), join q, k and v into
the fused ``qkv_matmul`` row, check the result against the stage's layout (and
against the model's sizes when a config is given), and write the files and a
manifest with ``CaptureWriter``. Only numpy is needed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pv import environment, files
from pv import stages as stage_table
from pv.capture.importer import declared, dumps
from pv.capture.importer.mapping import Mapping, Rule, Transform
from pv.capture.model.config import ModelConfig
from pv.capture.store.writer import CaptureWriter
from pv.errors import PvError

#: Replicated shards may differ by all-reduce order; beyond this they are not replicas.
REPLICA_RTOL = 1e-4


@dataclass(frozen=True)
class ImportResult:
    output: Path
    files: int
    stages: list[str]
    ignored: list[str]
    ranks: int
    #: ``dtype_captured`` of the files written (the dump's own dtypes), and the declared compute dtype.
    dtypes: list[str]
    compute: str | None
    token_ids: list[int] | None


def _dims(config: ModelConfig | None, seq: int | None) -> dict[str, int]:
    if config is None:
        return {}
    d = config.dims(seq or 1)
    out = {name: d.size(name) for name in ("H", "NH", "KVH", "D", "I", "V", "NHD", "QKV")}
    if seq is not None:
        out["S"] = seq
    return out


def apply(arr: np.ndarray, transforms: Sequence[Transform], config: ModelConfig | None,
          where: str, past: int = 0) -> np.ndarray:
    """Run a rule's transforms in order; each failure names the tensor and the step.

    ``past``: the positions a KV cache held before this dump's tokens (a
    generation's decode step), whose keys the attention matrices also hold.
    """
    x = np.asarray(arr, dtype=np.float32)
    for i, t in enumerate(transforms):
        here = f"{where}: transform[{i}] {t.name}"
        if t.name == "drop_batch":
            if x.ndim == 0 or x.shape[0] != 1:
                raise PvError(f"{here}: leading axis is {x.shape[:1]}, not a batch of 1")
            x = x[0]
        elif t.name == "select":
            axis, index = int(t.arg["axis"]), int(t.arg["index"])
            if not -x.ndim <= axis < x.ndim or not -x.shape[axis] <= index < x.shape[axis]:
                raise PvError(f"{here}: axis {axis} index {index} out of range for {list(x.shape)}")
            x = np.take(x, index, axis=axis)
        elif t.name == "reshape":
            dims = _dims(config, None)
            shape: list[int] = []
            for d in t.arg:
                if isinstance(d, int):
                    shape.append(d)
                elif d == "S":  # positions: the leading axis of the tensor as it stands
                    shape.append(int(x.shape[0]) if x.ndim else 1)
                elif d in dims:
                    shape.append(dims[d])
                else:
                    raise PvError(f"{here}: dim {d} needs --model (the model's sizes)")
            if shape.count(-1) > 1:
                raise PvError(f"{here}: more than one unknown dim in {t.arg}")
            try:
                x = x.reshape(shape)
            except ValueError:
                raise PvError(f"{here}: {list(x.shape)} cannot be read as {t.arg}") from None
        elif t.name == "transpose":
            if len(t.arg) != x.ndim:
                raise PvError(f"{here}: {len(t.arg)} axes given for a {x.ndim}-d tensor")
            x = np.ascontiguousarray(x.transpose(t.arg))
        elif t.name == "halves_from_pairs":
            if x.shape[-1] % 2:
                raise PvError(f"{here}: last axis {x.shape[-1]} is odd")
            x = np.concatenate((x[..., 0::2], x[..., 1::2]), axis=-1)
        elif t.name == "crop_keys":
            keys = x.shape[-2] + past if x.ndim >= 2 else 0
            if x.ndim < 2 or x.shape[-1] < keys:
                raise PvError(f"{here}: {list(x.shape)} has fewer keys than queries"
                              + (f" and the {past} cached positions" if past else ""))
            x = x[..., :keys]
        elif t.name == "scale":
            if t.arg in ("inv_sqrt_head_dim", "attention_scale"):
                if config is None:
                    raise PvError(f"{here}: {t.arg} needs --model (the head dim, the score scale)")
                factor = 1.0 / math.sqrt(config.head_dim) if t.arg == "inv_sqrt_head_dim" else config.attention_scale
            else:
                factor = float(t.arg)
            x = x * np.float32(factor)
        elif t.name == "causal_fill":
            if x.ndim < 2:
                raise PvError(f"{here}: needs at least two axes")
            q, k = x.shape[-2], x.shape[-1]
            upper = np.triu(np.ones((q, k), dtype=bool), k=k - q + 1)
            x = np.where(upper, np.float32(t.arg), x)
        else:  # pragma: no cover - the mapping loader refuses unknown names
            raise PvError(f"{here}: unknown transform")
    return np.ascontiguousarray(x, dtype=np.float32)


def _unshard(rule: Rule, shards: list[np.ndarray], config: ModelConfig | None, where: str,
             notes: list[str]) -> np.ndarray:
    if len(shards) == 1:
        return shards[0]
    if rule.shard == "replicated":
        first = shards[0]
        for r, other in enumerate(shards[1:], start=1):
            if other.shape != first.shape or not np.allclose(other, first, rtol=REPLICA_RTOL,
                                                             atol=1e-6, equal_nan=True):
                raise PvError(f"{where}: rank {r} differs from rank 0, but {rule.stage} is "
                              "replicated (all-reduced); set shard: AXIS in the mapping rule")
        return first
    if rule.shard == "qkv" and rule.part is None:
        if config is None:
            raise PvError(f"{where}: unsharding a fused q|k|v tensor needs --model (head counts)")
        n = len(shards)
        q_w = config.num_attention_heads * config.head_dim // n
        k_w = config.num_key_value_heads * config.head_dim // n
        parts = [(s[..., :q_w], s[..., q_w:q_w + k_w], s[..., q_w + k_w:]) for s in shards]
        return np.concatenate([np.concatenate([p[i] for p in parts], axis=-1) for i in range(3)],
                              axis=-1)
    axis = -1 if rule.shard == "qkv" else int(rule.shard)
    try:
        return np.concatenate(shards, axis=axis)
    except ValueError as exc:
        raise PvError(f"{where}: shards do not concatenate along axis {axis}: {exc}") from None


def _rank(path: Path, mapping: Mapping) -> int:
    tp = mapping.tensor_parallel
    if tp is None:
        return 0
    m = tp.rank_pattern.search(str(path))
    if m is None:
        raise PvError(f"{path}: tensor_parallel.rank '{tp.rank_pattern.pattern}' finds no rank in "
                      "this path")
    rank = int(m.group("rank"))
    if not 0 <= rank < tp.size:
        raise PvError(f"{path}: rank {rank} out of range for tensor_parallel.size {tp.size}")
    return rank


def _check_shape(stage: str, arr: np.ndarray, config: ModelConfig | None, where: str,
                 past: int | None = None) -> None:
    """The stage's layout, and with a config its sizes. The attention matrices are
    ``[NH, S, P + S]``: ``P`` is ``past`` where a generation says it, else any ``P >= 0``."""
    st = stage_table.get(stage)
    if arr.ndim != len(st.layout):
        raise PvError(f"{where}: {stage} is {list(st.layout)} but the transformed tensor is "
                      f"{list(arr.shape)}; fix the rule's transform")
    if config is None:
        return
    seq = arr.shape[st.layout.index("S")] if "S" in st.layout else 1
    expected = st.shape(config.dims(seq))
    if st.mask == "causal" and len(expected) == 3:
        keys = seq + past if past is not None else max(int(arr.shape[-1]), seq)
        expected = (*expected[:-1], keys)
    if tuple(arr.shape) != expected:
        raise PvError(f"{where}: {stage} should be {list(expected)} for this model, got "
                      f"{list(arr.shape)}")


def _shown(names: Sequence[str], limit: int = 6) -> str:
    unique = list(dict.fromkeys(names))
    more = f" (+{len(unique) - limit} more)" if len(unique) > limit else ""
    return ", ".join(unique[:limit]) + more


def _wrong_graph(mapping: Mapping, extra: Sequence[str], used: set[int]) -> str:
    """One line: the tensors only another graph has, and the rules nothing in the dump matched."""
    missing = []
    for rule in mapping.rules:
        if rule.index not in used:
            name = re.sub(r"\(:[A-Z_]+\)\?$", "", rule.pattern.pattern.replace(r"(?P<layer>\d+)", "N"))
            missing.append(f"{name} ({rule.stage}{'' if rule.part is None else ':' + rule.part})")
    layers = [re.sub(r"-\d+(?=$|:)", "-N", name) for name in extra]  # one entry per node, not per layer
    return (f"the dump is not of mapping {mapping.name}'s graph: extra tensor(s) {_shown(layers)}; "
            f"missing: {_shown(missing, 10) if missing else 'none'}")


def import_dumps(
    paths: Sequence[str | os.PathLike[str]],
    mapping: Mapping,
    output: str | os.PathLike[str],
    *,
    config: ModelConfig | None = None,
    past: int | None = None,  # a generation step's position: its attention rows hold past + S keys
    dtype: str | None = None,
    tokens: str | None = None,
) -> ImportResult:
    """Import dump files into a capture directory (see the module docstring).

    ``dtype`` (``--dtype``) declares the engine's compute dtype over the mapping's
    ``dtype:``; ``tokens`` (``--tokens``) the ids it ran, which must agree with the
    dump tensor the mapping's ``tokens:`` names (``pv.capture.importer.declared``).
    """
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PvError(f"{out}: output must be a new or empty directory")
    if config is not None and mapping.families and config.family.name not in mapping.families:
        raise PvError(f"mapping {mapping.name} reads dumps of {', '.join(mapping.families)} models; "
                      f"--model is a {config.family.name} model")
    compute = declared.compute_dtype(dtype, mapping.dtype)
    dump_files = dumps.expand(paths)
    tp_size = mapping.tensor_parallel.size if mapping.tensor_parallel else 1
    by_rank: dict[int, list[Path]] = {}
    for p in dump_files:
        by_rank.setdefault(_rank(p, mapping), []).append(p)
    missing = [r for r in range(tp_size) if r not in by_rank]
    if missing:
        raise PvError(f"tensor_parallel.size is {tp_size} but no dump file has rank {missing[0]}")
    # (stage, layer, part) -> rank -> array
    found: dict[tuple[str, int | None, str | None], dict[int, tuple[Rule, np.ndarray, str]]] = {}
    ignored: list[str] = []
    tensors_in: list[tuple[int, Path, str, np.ndarray]] = []
    dumped: dict[str, str] = {}  # tensor name -> its dtype as dumped
    for rank, group in sorted(by_rank.items()):
        for path in group:
            for name, (arr, kind) in dumps.read_typed(path).items():
                tensors_in.append((rank, path, name, arr))
                dumped[name] = kind
    extra = [name for _, _, name, _ in tensors_in if mapping.is_foreign(name)]
    if extra:  # checked before any transform: another graph's names mean other layouts
        used = {rule.index for _, _, name, _ in tensors_in
                for rule in mapping.rules if rule.match(name) is not None}
        raise PvError(_wrong_graph(mapping, extra, used))
    ids_tensor = [(name, arr) for _, _, name, arr in tensors_in
                  if mapping.tokens is not None and mapping.tokens.fullmatch(name)]
    if mapping.tokens is not None and not ids_tensor and tokens is None:
        raise PvError(f"mapping {mapping.name} reads the token ids from '{mapping.tokens.pattern}', "
                      "which no dump holds (or give --tokens)")
    token_ids = declared.token_ids(
        tokens, declared.tokens_from_dump(ids_tensor[0][1], ids_tensor[0][0]) if ids_tensor else None,
        ids_tensor[0][0] if ids_tensor else None, None if config is None else config.vocab_size)
    for rank, path, name, arr in tensors_in:
        if ids_tensor and name == ids_tensor[0][0]:
            continue
        hit = mapping.rule_for(name)
        if hit is None:
            ignored.append(name)
            continue
        rule, layer = hit
        if stage_table.get(rule.stage).name == "embedding":
            layer = 0
        value = apply(arr, rule.transforms, config, f"{path}: '{name}'", past or 0)
        if rule.together and (value.ndim == 0 or value.shape[-1] % len(rule.together)):
            raise PvError(f"{path}: '{name}' {list(value.shape)} does not split into "
                          f"{'|'.join(rule.together)} in equal parts of its last axis")
        pieces = [(rule.stage, value)] if not rule.together else list(
            zip(rule.together, np.split(value, len(rule.together), axis=-1), strict=True))
        for stage, piece in pieces:
            slot = found.setdefault((stage, layer, rule.part), {})
            if rank in slot:
                raise PvError(f"{path}: '{name}' and '{slot[rank][2]}' both map to {stage}"
                              f"{'' if layer is None else '@' + str(layer)}"
                              f"{'' if rule.part is None else ' part ' + rule.part}")
            slot[rank] = (rule, piece, name)
    if not found:
        raise PvError(f"no tensor name matched mapping {mapping.name} "
                      f"(first names: {', '.join(sorted(set(ignored))[:5])})")
    notes: list[str] = []
    tensors: dict[tuple[str, int | None], np.ndarray] = {}
    parts: dict[tuple[str, int | None], dict[str, np.ndarray]] = {}
    for (stage, layer, part), slot in found.items():
        where = f"{stage}{'' if layer is None else '@' + str(layer)}"
        if len(slot) != tp_size:
            raise PvError(f"{where}: found on {len(slot)} of {tp_size} ranks")
        rule = slot[0][0]
        whole = _unshard(rule, [slot[r][1] for r in range(tp_size)], config, where, notes)
        if part is None:
            tensors[(stage, layer)] = whole
        else:
            parts.setdefault((stage, layer), {})[part] = whole.reshape(whole.shape[0], -1)
    for fused, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise PvError(f"{fused[0]}@{fused[1]}: has part(s) {', '.join(sorted(qkv))}; "
                          "needs all of q, k and v")
        if fused in tensors:
            raise PvError(f"{fused[0]}@{fused[1]}: given both fused and as q/k/v parts")
        tensors[fused] = np.concatenate([qkv["q"], qkv["k"], qkv["v"]], axis=-1)
    positions: dict[str, int] = {}
    for (stage, layer), arr in tensors.items():
        where = f"{stage}{'' if layer is None else '@' + str(layer)}"
        _check_shape(stage, arr, config, where, past)
        if "S" in stage_table.get(stage).layout:
            positions[where] = int(arr.shape[stage_table.get(stage).layout.index("S")])
    if token_ids is not None:
        declared.check_positions(token_ids, positions)
    kinds: dict[tuple[str, int | None], set[str]] = {}
    for (stage, layer, _), slot in found.items():
        kinds.setdefault((stage, layer), set()).update(dumped[name] for _, _, name in slot.values())
    run: dict[str, Any] = {
        "engine": f"import:{mapping.name}",
        "dtype": compute,
        "token_ids": token_ids,
        "mapping": {"path": mapping.source, "sha256": files.sha256_file(mapping.source)},
        "dumps": [{"path": str(p), "sha256": files.sha256_file(p)} for p in dump_files],
        "tensor_parallel": tp_size,
        "model": None if config is None else {"config": config.to_dict()},
        "versions": {k: v or "absent" for k, v in environment.versions(["pv", "numpy"]).items()},
        "notes": notes,
    }
    out = Path(output)
    writer = CaptureWriter(out, run)
    order = sorted(tensors, key=lambda k: stage_table.sort_key(k[0], k[1]))
    recorded_dtypes: set[str] = set()
    try:
        for stage, layer in order:
            recorded, as_dumped = declared.captured(kinds[(stage, layer)])
            recorded_dtypes.add(recorded)
            writer.write(stage, layer, tensors[(stage, layer)], dtype_captured=recorded,
                         provenance="imported", **({"dtype_dumped": as_dumped} if as_dumped else {}))
        writer.close()
    except BaseException:
        writer.abort()
        for rec in writer.files:
            (out / rec["path"]).unlink(missing_ok=True)
        raise
    return ImportResult(out, len(order), sorted({s for s, _ in order},
                        key=lambda s: stage_table.get(s).order), sorted(set(ignored)), tp_size,
                        sorted(recorded_dtypes), compute, token_ids)
