"""pv's public Python API: the entry points the ``pv`` commands themselves call.

Each function takes paths and options, returns data (frozen dataclasses with a
``to_json`` or ``asdict`` view) and raises ``pv.PvError`` with a one-line message
for bad input; nothing prints. Heavy dependencies load inside the function that
needs them, so ``import pv`` stays cheap (no torch, no numpy): only ``capture``
needs the ``engine`` extra. ``docs/api.md`` shows each with an example.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pv.capture.trace import TraceResult
    from pv.compare.bisect import BisectResult
    from pv.compare.diff import DiffReport
    from pv.compare.tolerances import Tolerances
    from pv.contract.validate import Report
    from pv.report.gate import GateResult
    from pv.report.status import StatusReport

PathLike = str | os.PathLike[str]

__all__ = ["bisect", "capture", "diff", "gate", "status", "validate"]


def validate(paths: Iterable[PathLike], *, strict: bool = False,
             check_evidence: bool | None = None, jobs: int | None = None) -> Report:
    """Validate the contracts under ``paths`` (files, or folders searched for ``*.yaml``).

    Returns a ``Report``: ``ok``, ``findings`` (located ``Finding`` values),
    ``contracts`` (id, status, falsifiers). ``check_evidence`` None checks cited
    files inside a git checkout. Same as ``pv validate``.
    """
    from pv.contract.validate import validate_paths

    return validate_paths(paths, strict=strict, check_evidence=check_evidence, jobs=jobs)


def capture(model: str, *, output: PathLike, prompt: str | None = None,
            tokens: str | Sequence[int] | None = None, stages: str | Sequence[str] = "all",
            layers: str = "all", engine: str = "pv", device: str = "cpu",
            dtype: str = "float32", overwrite: bool = False,
            on_write: Callable[[str, int | None], None] | None = None) -> TraceResult:
    """Run ``model`` (a GGUF file or a Hugging Face folder) once and save the named stages
    as APRT files under ``output``, as ``pv trace`` does. ``on_write(stage, layer)`` is
    called after each file, for progress. Needs the ``engine`` extra (torch)."""
    from pv.capture.trace import capture as run_capture

    return run_capture(model, output=output, prompt=prompt, tokens=tokens, stages=stages,
                       layers=layers, engine=engine, device=device, dtype=dtype,
                       overwrite=overwrite, on_write=on_write)


def diff(candidate: PathLike, reference: PathLike, *, model: Any = None,
         tolerances: Tolerances | None = None, stages: Sequence[str] | None = None,
         top_k: int = 5) -> DiffReport:
    """Compare two APRT files or two capture folders stage by stage; ``reference`` is the
    oracle. ``model`` (a config or a model path) lets head-split layouts be aligned.
    Same as ``pv diff``."""
    from pv.compare.diff import diff_paths

    a, b = Path(candidate), Path(reference)
    if stages is None:
        return diff_paths(a, b, model=model, tolerances=tolerances, top_k=top_k)
    return diff_paths(a, b, model=model, tolerances=tolerances, stages=stages, top_k=top_k)


def bisect(candidate: PathLike, reference: PathLike, *, model: Any = None,
           tolerances: Tolerances | None = None) -> BisectResult:
    """Walk two capture folders in stage order and name the first stage that diverges
    (and the last one that agrees). Same as ``pv bisect A B``."""
    from pv.compare.bisect import bisect as run_bisect

    return run_bisect(Path(candidate), Path(reference), model=model, tolerances=tolerances)


def _contracts(paths: Iterable[PathLike] | None, root: Path) -> list[Any]:
    from pv.contract.model import load_contracts

    chosen = [Path(p) for p in paths] if paths is not None else []
    return load_contracts(chosen or [root / "contracts"])


def status(paths: Iterable[PathLike] | None = None, *,
           evidence_dir: PathLike | None = None) -> StatusReport:
    """Every falsifier's status, recomputed from the evidence records (default: the
    repository's ``contracts/`` and ``evidence/``). Same as ``pv status``."""
    from pv.repo import repo_root
    from pv.report import status as status_report

    root = repo_root()
    evidence = Path(evidence_dir) if evidence_dir is not None else root / "evidence"
    return status_report.collect(_contracts(paths, root), evidence.resolve(), root)


def gate(paths: Iterable[PathLike] | None = None, *, baseline: str | None = None, strict: bool = False,
         require_signed: bool = False, evidence_dir: PathLike | None = None,
         falsifiers_dir: PathLike | None = None) -> GateResult:
    """The gate's verdict against ``baseline`` (a git revision or a ``pv status --format json``
    file; default: the merge base with main): ``.ok``, ``.failures``, ``.notes``. Evidence is
    verified with ``PV_EVIDENCE_KEY`` when it is set. The same function ``pv gate`` runs."""
    from pv.report import gate as gate_report

    return gate_report.run([Path(p) for p in paths] if paths is not None else [], baseline=baseline,
                           strict=strict, require_signed=require_signed,
                           evidence_dir=Path(evidence_dir) if evidence_dir is not None else None,
                           falsifiers_dir=Path(falsifiers_dir) if falsifiers_dir is not None else None)
