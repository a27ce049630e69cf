"""Local versus cumulative error: rerun each layer from the reference's input.

In a full forward every layer inherits the error of the layers before it, so
a bug in layer 1 makes layers 2, 3, ... fail too. Feeding each layer of the
engine under test the *reference's* input to that layer (the reference
``post_ffn_residual`` of layer L-1, or its ``embedding`` for layer 0) through
``Engine.run_layer`` gives each layer's own error. A layer whose local error
fails introduces a bug; a layer that fails only cumulatively carries one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.model.config import ModelConfig
from pv.capture.store import aprt, directory
from pv.capture.tap import Parts
from pv.compare.diff import compare_arrays
from pv.compare.pair import side_dtype
from pv.compare.records import DiffReport, StageRecord
from pv.compare.tolerances import Tolerances
from pv.errors import PvError


class MemoryTap:
    """Keeps the stages of one layer in memory (float32 host copies), per the Tap protocol."""

    borrow = False

    def __init__(self, layer: int):
        self.layer = layer
        self.tensors: dict[str, np.ndarray] = {}
        self.skipped: dict[str, str] = {}
        self._parts = Parts()

    def wants(self, stage: str, layer: int | None) -> bool:
        st = stage_table.BY_NAME.get(stage)
        return st is not None and not st.whole_model and layer == self.layer

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        if not self.wants(stage, layer):
            return
        part = meta.get("part")
        if part is not None:
            held = tensor.detach() if meta.get("own") else tensor.detach().clone()  # kept past this call
            tensor = self._parts.add(stage, layer, held, part)
            if tensor is None:
                return
        self.tensors[stage] = tensor.detach().float().cpu().numpy().copy()

    def not_applicable(self, stage: str, reason: str) -> None:
        self.skipped[stage] = reason


@dataclass(frozen=True)
class LayerIsolation:
    layer: int
    #: Every stage of the layer rerun from the reference input, in order.
    records: tuple[StageRecord, ...]
    #: The same layer's output in the full (cumulative) comparison, if captured.
    cumulative: StageRecord | None
    note: str = ""

    @property
    def output(self) -> StageRecord | None:
        for rec in self.records:
            if rec.stage == "post_ffn_residual":
                return rec
        return None

    @property
    def first_local(self) -> StageRecord | None:
        return next((r for r in self.records if r.bad), None)

    @property
    def local_ok(self) -> bool:
        return bool(self.records) and self.first_local is None

    def to_dict(self) -> dict[str, Any]:
        out, cum, first = self.output, self.cumulative, self.first_local
        return {
            "layer": self.layer,
            "local_ok": self.local_ok,
            "first_local_divergence": first.stage if first else None,
            "local_output": _brief(out),
            "cumulative_output": _brief(cum),
            "note": self.note,
        }


def _brief(rec: StageRecord | None) -> dict[str, Any] | None:
    if rec is None or rec.metrics is None:
        return None
    m = rec.metrics
    worst = m.worst_position
    return {
        "status": rec.status,
        "cosine": m.cosine,
        "rel_err": m.rel_err,
        "worst_position_rel_err": worst[1] if worst else m.rel_err,
    }


@dataclass(frozen=True)
class IsolateResult:
    layers: tuple[LayerIsolation, ...]

    @property
    def introduced(self) -> list[int]:
        """Layers whose own (local) error fails: where a bug enters."""
        return [x.layer for x in self.layers if x.records and not x.local_ok]

    def to_dict(self) -> dict[str, Any]:
        return {"introduced_in": self.introduced, "layers": [x.to_dict() for x in self.layers]}


def isolate_layer(engine: Any, layer: int, hidden: np.ndarray, reference: Mapping[str, tuple[np.ndarray, str | None]],
                  *, tolerances: Tolerances, config: ModelConfig | None,
                  cumulative: StageRecord | None = None) -> LayerIsolation:
    """Rerun ``layer`` of ``engine`` from ``hidden`` (the reference's input to it) and compare each
    of its stages with ``reference`` (stage name -> the reference's values and dtype class)."""
    tap = MemoryTap(layer)
    engine.run_layer(layer, hidden, tap=tap)
    records: list[StageRecord] = []
    for st in stage_table.LAYER_STAGES:
        if st.name not in tap.tensors or st.name not in reference:
            continue
        ref, dtype = reference[st.name]
        records.append(compare_arrays(tap.tensors[st.name], ref, st.name, layer, config=config,
                                      tolerance=tolerances.for_stage(st.name, dtype)))
    note = "" if records else "no stage of this layer is in both the rerun and the reference"
    return LayerIsolation(layer, tuple(records), cumulative, note)


def layer_input(layer: int) -> tuple[str, int]:
    """The reference stage a layer is rerun from: the embedding, or the previous layer's output."""
    return ("embedding", 0) if layer == 0 else ("post_ffn_residual", layer - 1)


def isolate(
    engine: Any,
    reference: directory.Capture,
    *,
    cumulative: DiffReport | None = None,
    tolerances: Tolerances | None = None,
    config: ModelConfig | None = None,
    verify: bool = True,
) -> IsolateResult:
    """Rerun every layer of ``engine`` from ``reference``'s inputs; compare each stage locally.

    ``verify``: every reference file read must still have the digest its manifest records.
    """
    tols = tolerances or Tolerances()
    cfg = config or getattr(engine, "config", None)
    entries = reference.by_key()
    n_layers = int(engine.config.num_hidden_layers)
    cum = {(r.stage, r.layer): r for r in (cumulative.records if cumulative else ())}
    out: list[LayerIsolation] = []
    for layer in range(n_layers):
        src = layer_input(layer)
        if src not in entries:
            out.append(LayerIsolation(layer, (), cum.get(("post_ffn_residual", layer)),
                                      note=f"reference has no {src[0]} for layer {src[1]}: not rerun"))
            continue
        ref = {st.name: (_read(entries[(st.name, layer)], cfg, verify),
                         side_dtype(entries[(st.name, layer)].meta, reference.manifest))
               for st in stage_table.LAYER_STAGES if (st.name, layer) in entries}
        out.append(isolate_layer(engine, layer, _read(entries[src], cfg, verify), ref, tolerances=tols, config=cfg,
                                 cumulative=cum.get(("post_ffn_residual", layer))))
    return IsolateResult(tuple(out))


def _read(entry: directory.Entry, config: ModelConfig | None, verify: bool = True) -> np.ndarray:
    """A reference tensor in its stage shape (manifest, else solved from the config)."""
    if verify:
        aprt.require_digest(entry.path, entry.meta)
    from pv.compare.align import _dims_from_count

    shape = entry.shape
    if shape is None and config is not None:
        shape = _dims_from_count(stage_table.BY_NAME[entry.stage], entry.header.count, config)
    if shape is None:
        raise PvError(
            f"{entry.path}: shape unknown (no manifest); give --model so it can be inferred"
        )
    _, arr = aprt.read(entry.path)
    return arr.reshape(shape)
