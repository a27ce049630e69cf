"""Library entry point for a capture: plan, check, run, write, describe.

``pv trace``, ``pv bisect --model`` and the falsifiers all capture through
``capture(...)``. The work is split in two so that bad input fails before any
weight is loaded or any forward runs: ``make_plan`` turns arguments into a
frozen, fully checked ``TracePlan`` (stages, layers against the model's layer
count, tokens against its vocabulary, dtype, device, fault, output directory),
and ``run_plan`` executes it. ``--dry-run`` prints the plan and stops there.

The manifest's ``run`` block records what is needed to reproduce or judge the
capture: model path, architecture, config and weight fingerprint, token ids and
prompt, device, dtype, engine, fault, and library versions.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pv import environment
from pv import stages as stage_table
from pv.capture import partial, runners
from pv.capture.disktap import DiskTap
from pv.capture.faults import FaultSpec
from pv.capture.model.config import ModelConfig
from pv.capture.model.load import load_model, model_config
from pv.capture.model.loaded import LoadedModel
from pv.capture.plan import CapturePlan, stage_keys
from pv.capture.runners import Runner, Settings
from pv.capture.runtime import DTYPES, resolve_device
from pv.capture.store import aprt, directory
from pv.capture.store.steps import GENERATE_FILE
from pv.capture.store.writer import CaptureWriter
from pv.capture.tokens import check_context, check_ids, parse_tokens, tokenize
from pv.errors import PvError


@dataclass(frozen=True)
class TracePlan:
    """Everything a capture will do, checked before any forward work."""

    model: str
    engine: str
    capture: CapturePlan
    n_layers: int
    tokens: tuple[int, ...] | None
    prompt: str | None
    #: Where the capture goes; None: nowhere (the stages go to a tap in memory).
    output: Path | None
    device: str
    dtype: str
    fault: FaultSpec | None
    overwrite: bool
    #: transformers/accelerate device map for the oracle ("auto" or {module: device}).
    device_map: Any = None
    offload_dir: str | None = None
    #: The model's features (``ModelConfig.features``): stages it lacks are not expected.
    features: dict[str, bool] | None = None

    @property
    def expected(self) -> list[tuple[str, int | None]]:
        return self.capture.expected(self.n_layers, self.features)

    @property
    def destination(self) -> Path:
        """``output``, for the runs that write one (a plan made for memory has none)."""
        if self.output is None:
            raise PvError("this capture plan writes nowhere: its stages go to a tap in memory")
        return self.output

    def describe(self) -> list[str]:
        layers = self.capture.layers
        return [
            f"model:   {self.model}",
            f"engine:  {self.engine}",
            f"input:   {'tokens ' + ','.join(map(str, self.tokens)) if self.tokens else repr(self.prompt)}",
            f"stages:  {', '.join(s.name for s in self.capture.stages)}",
            f"layers:  {'all (' + str(self.n_layers) + ')' if layers is None else ','.join(map(str, layers))}",
            f"device:  {self.device}   dtype: {self.dtype}",
            f"fault:   {self.fault if self.fault else 'none'}",
            *([f"slice:   {self.capture.slice.describe()} of attn_scores, attn_softmax"] if self.capture.slice else []),
            (f"output:  {self.output or '(none: compared in memory)'}"
             f"{' (replacing the capture there)' if self.overwrite else ''}"),
            f"files:   up to {len(self.expected)}",
        ]


@dataclass(frozen=True)
class TraceResult:
    output: Path
    files: int
    logits: np.ndarray = field(repr=False)
    token_ids: list[int]
    manifest: dict[str, Any] = field(repr=False)
    not_applicable: dict[str, str]
    bytes_written: int = 0


def check_output(output: Path, overwrite: bool) -> None:
    """The output directory must be creatable or writable, and empty unless ``overwrite``."""
    if output.exists():
        if not output.is_dir():
            raise PvError(f"{output}: exists and is not a directory")
        if not os.access(output, os.W_OK | os.X_OK):
            raise PvError(f"{output}: output directory is not writable")
        if any(output.iterdir()) and not overwrite:
            raise PvError(f"{output}: output directory is not empty; choose a new one or pass --force")
        return
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PvError(f"{output}: cannot create the output directory ({parent} is not writable)")


def make_plan(
    model: str,
    config: ModelConfig,
    *,
    tokens: str | Sequence[int] | None = None,
    prompt: str | None = None,
    stages: str | Sequence[str] = "all",
    layers: str = "all",
    output: str | os.PathLike[str] | None,
    engine: str = "pv",
    device: str = "cpu",
    dtype: str = "float32",
    fault: str | FaultSpec | None = None,
    overwrite: bool = False,
    device_map: Any = None,
    offload_dir: str | None = None,
    positions: str | None = None,
    heads: str | None = None,
) -> TracePlan:
    kind = runners.get(engine)
    if (tokens is None) == (prompt is None):
        raise PvError("give exactly one of --prompt TEXT or --tokens IDS")
    if prompt is not None and not prompt:
        raise PvError("--prompt is empty")
    token_ids = parse_tokens(tokens, config.vocab_size) if tokens is not None else None
    if token_ids is not None:
        check_context(len(token_ids), config, "--tokens")
    cut = partial.parse(positions, heads)
    if cut is not None:
        cut.check(len(token_ids) if token_ids is not None else config.max_position_embeddings,
                  config.num_attention_heads)
    plan = CapturePlan(stage_table.parse_stages(stages), stage_table.parse_layers(layers, config.num_hidden_layers),
                       cut)
    dtype_name = dtype.strip().lower()
    if dtype_name not in DTYPES:
        raise PvError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    resolve_device(device)
    kind.check_plan(model, device, dtype_name)
    spec = kind.fault(fault, config.num_hidden_layers, config.features)
    if device_map is not None and not kind.device_map:
        takers = [k for k in runners.RUNNERS.values() if k.device_map]
        raise PvError(f"--device-map spreads {' or '.join(k.description for k in takers)}: it needs "
                      f"--engine {' or '.join(k.name for k in takers)}")
    out = Path(output) if output is not None else None
    if out is not None:
        check_output(out, overwrite)
    return TracePlan(
        model=model, engine=kind.name, capture=plan, n_layers=config.num_hidden_layers,
        tokens=token_ids, prompt=prompt, output=out, device=device.strip().lower(),
        dtype=dtype_name, fault=spec, overwrite=overwrite, device_map=device_map,
        offload_dir=offload_dir, features=config.features,
    )


def versions(engine: str, model: LoadedModel) -> dict[str, str]:
    names = ["numpy", "torch", *runners.get(engine).packages]
    if model.source.lower().endswith(".gguf"):
        names.append("gguf")
    found = environment.versions(["pv", *names])
    return {name: version or "absent" for name, version in found.items()}


def clear_capture(root: Path) -> None:
    """``--force``: remove the capture in ``root`` and nothing else.

    That is a single capture's manifest and stage files, and a generation's
    ``generate.json`` (first, so nothing claims the old steps any more) and
    every ``step-N`` entry. Other files and folders in ``root`` stay.
    """
    if not root.is_dir():
        return
    (root / GENERATE_FILE).unlink(missing_ok=True)
    (root / directory.MANIFEST).unlink(missing_ok=True)
    for child in list(root.iterdir()):
        if _STEP_DIR.fullmatch(child.name):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        elif child.is_file() and child.suffix == ".bin" and child.stem.lower() in stage_table.BY_NAME:
            child.unlink()
        elif child.is_dir() and directory._LAYER_DIR.match(child.name):
            for f in child.glob("*.bin"):
                if f.stem.lower() in stage_table.BY_NAME:
                    f.unlink()
            if not any(child.iterdir()):
                child.rmdir()


_STEP_DIR = re.compile(r"step-[0-9]+")


def _remove_written(root: Path, files: list[dict[str, Any]], created: bool) -> None:
    """After a failed capture: take back the files it wrote, so nothing half-done remains."""
    for rec in files:
        (root / rec["path"]).unlink(missing_ok=True)
    for child in root.glob("layer-*"):
        if child.is_dir() and not any(child.iterdir()):
            child.rmdir()
    if created and root.is_dir() and not any(root.iterdir()):
        shutil.rmtree(root, ignore_errors=True)


def _provenance_summary(files: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Run-level record of which stages were observed and which recomputed."""
    out: dict[str, list[str]] = {"observed": [], "recomputed": []}
    for rec in files:
        names = out.setdefault(str(rec.get("provenance", "observed")), [])
        if rec["stage"] not in names:
            names.append(rec["stage"])
    return out


def make_runner(plan: TracePlan, model: LoadedModel) -> Runner:
    """The runner a plan names, from the registry (``pv.capture.runners``)."""
    return runners.get(plan.engine).load(model, Settings(
        device=plan.device, dtype=plan.dtype, fault=plan.fault, device_map=plan.device_map,
        offload_dir=plan.offload_dir))


def describe_run(plan: TracePlan, model: LoadedModel, token_ids: list[int], runner: Runner) -> dict[str, Any]:
    """The manifest's ``run`` block: what is needed to reproduce or judge the capture."""
    run_info = {
        "model": model.describe(),
        "token_ids": token_ids,
        "prompt": plan.prompt,
        "device": plan.device,
        "dtype": plan.dtype,
        "engine": plan.engine,
        "fault": None if plan.fault is None else {
            "name": plan.fault.name, "layer": plan.fault.layer, "stage": plan.fault.fault.stage,
        },
        "stages": [s.name for s in plan.capture.stages],
        "layers": None if plan.capture.layers is None else list(plan.capture.layers),
        "slice": None if plan.capture.slice is None else plan.capture.slice.to_json(),
        "versions": versions(plan.engine, model),
    }
    run_info.update(runner.run_info())  # the runner's own record: kernels, quantization, device map, ...
    return run_info


def run_plan(
    plan: TracePlan,
    model: LoadedModel,
    *,
    on_write: Callable[[str, int | None], None] | None = None,
) -> TraceResult:
    """Run a checked plan: build the engine, stream the stages, write the manifest last."""
    token_ids = list(plan.tokens) if plan.tokens is not None else tokenize(model, plan.prompt or "")
    check_ids(token_ids, model.config.vocab_size)
    check_context(len(token_ids), model.config)
    if plan.capture.slice is not None:
        plan.capture.slice.check(len(token_ids), model.config.num_attention_heads)
    runner = make_runner(plan, model)
    try:
        return _run(plan, model, runner, token_ids, on_write)
    finally:
        runner.close()


def _run(plan: TracePlan, model: LoadedModel, runner: Runner, token_ids: list[int],
         on_write: Callable[[str, int | None], None] | None) -> TraceResult:
    run_info = describe_run(plan, model, token_ids, runner)
    created = not plan.destination.exists()
    if plan.overwrite:
        clear_capture(plan.destination)
    writer = CaptureWriter(plan.destination, run_info, overwrite=plan.overwrite)
    tap = DiskTap(plan.capture, writer, on_write=on_write)
    try:
        logits = runner.forward(token_ids, tap)
        tap.finish()
        if "provenance" not in writer.run:
            writer.run["provenance"] = _provenance_summary(writer.files)
        missing = tap.missing(plan.n_layers)
        if missing:
            names = stage_keys(missing)
            raise PvError(f"requested stages never fired: {', '.join(names[:8])}"
                          + (f" (+{len(names) - 8} more)" if len(names) > 8 else ""))
        writer.close()
    except BaseException:
        tap.abort()
        writer.abort()
        _remove_written(plan.destination, writer.files, created)
        raise
    nbytes = sum(aprt.HEADER_SIZE + 4 * int(np.prod(r["shape"], dtype=np.int64)) for r in writer.files)
    return TraceResult(
        output=plan.destination,
        files=len(writer.files),
        logits=logits.detach().float().cpu().numpy(),
        token_ids=token_ids,
        manifest=writer.manifest(),
        not_applicable=dict(tap.skipped),
        bytes_written=nbytes,
    )


def capture(
    model: str | LoadedModel,
    *,
    tokens: str | Sequence[int] | None = None,
    prompt: str | None = None,
    stages: str | Sequence[str] = "all",
    layers: str = "all",
    output: str | os.PathLike[str],
    engine: str = "pv",
    device: str = "cpu",
    dtype: str = "float32",
    fault: str | FaultSpec | None = None,
    overwrite: bool = False,
    on_write: Callable[[str, int | None], None] | None = None,
    device_map: Any = None,
    offload_dir: str | None = None,
) -> TraceResult:
    """Capture ``stages`` x ``layers`` of one forward into ``output`` (see ``make_plan``)."""
    if isinstance(model, LoadedModel):
        loaded, name = model, model.source
    else:
        name = str(model)
        model_config(name)  # a bad path or architecture fails before the weights load
        loaded = load_model(name)
    plan = make_plan(
        name, loaded.config, tokens=tokens, prompt=prompt, stages=stages, layers=layers,
        output=output, engine=engine, device=device, dtype=dtype, fault=fault, overwrite=overwrite,
        device_map=device_map, offload_dir=offload_dir,
    )
    return run_plan(plan, loaded, on_write=on_write)
