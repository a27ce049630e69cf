"""pv's public Python API: the entry points the ``pv`` commands themselves call.

Each function takes paths and options, returns data (frozen dataclasses with a
``to_json`` or ``asdict`` view) and raises ``pv.PvError`` with a one-line message
for bad input; nothing prints. Heavy dependencies load inside the function that
needs them, so ``import pv`` stays cheap (no torch, no numpy): only ``trace``
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
    from pv.compare.bisect_run import BisectRun, Progress
    from pv.compare.records import DiffReport
    from pv.compare.tolerances import Tolerances
    from pv.contract.coverage import Coverage
    from pv.contract.graph import Graph
    from pv.contract.modeline import Schemas
    from pv.contract.scaffold import Scaffolded
    from pv.contract.validate import Report
    from pv.falsify.campaign import ContractRun, FalsifyReport
    from pv.falsify.discharge import DischargeResult
    from pv.report.acknowledge import Acknowledged
    from pv.report.gate import GateResult
    from pv.report.prune import PruneReport
    from pv.report.status import StatusReport

PathLike = str | os.PathLike[str]

__all__ = ["acknowledge", "bisect", "bisect_run", "coverage", "diff", "discharge", "falsify_contracts", "gate",
           "graph", "prune_evidence", "scaffold", "schema", "status", "trace", "validate"]


def validate(paths: Iterable[PathLike], *, strict: bool = False, check_evidence: bool | None = None,
             jobs: int | None = None, fix: bool = False, evidence_dir: PathLike | None = None) -> Report:
    """Validate the contracts under ``paths`` (files, or folders searched for ``*.yaml``).

    Returns a ``Report``: ``ok``, ``findings`` (located ``Finding`` values),
    ``contracts`` (``pv.contract.model.Contract``), ``fixes``. ``check_evidence`` None checks
    cited files inside a git checkout. ``fix`` first renames status keys pv does not read,
    under each contract's lock in ``evidence_dir``. Same as ``pv validate``.
    """
    from pv.contract.validate import validate_paths

    return validate_paths(paths, strict=strict, check_evidence=check_evidence, jobs=jobs, fix=fix,
                          evidence_dir=_path(evidence_dir))


def trace(model: str, *, output: PathLike, prompt: str | None = None,
          tokens: str | Sequence[int] | None = None, stages: str | Sequence[str] = "all",
          layers: str = "all", engine: str = "pv", device: str = "cpu",
          dtype: str = "float32", overwrite: bool = False,
          on_write: Callable[[str, int | None], None] | None = None) -> TraceResult:
    """Run ``model`` (a GGUF file or a Hugging Face folder) once and save the named stages
    as APRT files under ``output``, as ``pv trace`` does. ``on_write(stage, layer)`` is
    called after each file, for progress. Needs the ``engine`` extra (torch)."""
    from pv.capture.trace import capture

    return capture(model, output=output, prompt=prompt, tokens=tokens, stages=stages,
                   layers=layers, engine=engine, device=device, dtype=dtype,
                   overwrite=overwrite, on_write=on_write)


def diff(candidate: PathLike, reference: PathLike, *, model: Any = None,
         tolerances: Tolerances | None = None, stages: Sequence[str] | None = None,
         top_k: int = 5) -> DiffReport:
    """Compare two APRT files or two capture folders stage by stage; ``reference`` is the
    oracle. ``model`` (a config or a model path) lets head-split layouts be aligned.
    Same as ``pv diff``: two folders must have run the same token ids where both record them."""
    from pv.compare.sides import checked_diff

    a, b = Path(candidate), Path(reference)
    if stages is None:
        return checked_diff(a, b, model=model, tolerances=tolerances, top_k=top_k)
    return checked_diff(a, b, model=model, tolerances=tolerances, stages=stages, top_k=top_k)


def bisect(candidate: PathLike, reference: PathLike, *, model: Any = None,
           tolerances: Tolerances | None = None) -> BisectResult:
    """Walk two capture folders in stage order and name the first stage that diverges
    (and the last one that agrees). Same as ``pv bisect A B``, token check included."""
    from dataclasses import replace

    from pv.compare.bisect import bisect as run_bisect
    from pv.compare.sides import same_input

    note = same_input(Path(candidate), Path(reference))
    result = run_bisect(Path(candidate), Path(reference), model=model, tolerances=tolerances)
    if note is None:
        return result
    return replace(result, report=replace(result.report, notes=(*result.report.notes, note)))


def bisect_run(a: PathLike | None = None, b: PathLike | None = None, *, model: str | None = None,
               tokens: str | None = None, prompt: str | None = None, fault: str | None = None,
               engine: str = "pv", reference: str = "hf", isolate: bool = False, plot: PathLike | None = None,
               metric: str = "sqnr", report: PathLike | None = None, keep: PathLike | None = None,
               device: str = "cpu", dtype: str = "float32", generate: int = 0, verify: bool = True,
               tolerances: Tolerances | None = None, progress: Progress | None = None) -> BisectRun:
    """The whole ``pv bisect``: two capture folders ``a`` (under test) and ``b`` (reference), or
    a ``model`` from which the engine under test (with ``fault``) and the ``reference`` runner
    are captured first (into ``keep``, or a temporary folder); ``generate`` bisects N decode
    steps first; ``isolate`` reruns the engine under test layer by layer; ``plot`` and
    ``report`` are written. Every argument is checked before any weight loads. Returns
    ``.ok``, ``.result`` (or ``.generation``), ``.isolate``, ``.context``, ``.to_dict()``."""
    from pv.compare.bisect_plan import make_plan
    from pv.compare.bisect_run import run

    plan = make_plan(a, b, model=model, tokens=tokens, prompt=prompt, fault=fault, engine=engine,
                     reference=reference, isolate=isolate, plot=plot, metric=metric, report=report, keep=keep,
                     device=device, dtype=dtype, generate=generate, verify=verify)
    return run(plan, tolerances, progress=progress)


def _path(value: PathLike | None) -> Path | None:
    return Path(value) if value is not None else None


def status(paths: Iterable[PathLike] | None = None, *, contract: str | None = None,
           evidence_dir: PathLike | None = None) -> StatusReport:
    """Every falsifier's status, recomputed from the evidence records (default: the
    repository's ``contracts/`` and ``evidence/``); ``contract`` (an id or file stem) keeps
    one contract. Same as ``pv status``."""
    from pv.report.status import status_of

    return status_of(paths or (), contract=contract, evidence_dir=_path(evidence_dir))


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


def falsify_contracts(contract: PathLike | None = None, *, all: bool = False, contracts_dir: PathLike | None = None,
            falsifiers_dir: PathLike | None = None, evidence_dir: PathLike | None = None, update: bool = True,
            pytest_args: Sequence[str] = (), in_process: bool = False, on_output: Callable[[str], None] | None = None,
            on_contract: Callable[[ContractRun], None] | None = None) -> FalsifyReport:
    """Run the falsifiers bound to ``contract`` (an id, a file stem or a path), or with ``all``
    to every contract, record evidence and promote what it supports: ``.runs`` (one
    ``ContractRun`` each), ``.exit_code``, ``.to_json()``. Progress lines go to ``on_output``
    and each finished contract to ``on_contract``, when given. Needs the ``test`` extra
    (pytest). Same as ``pv falsify``; not named ``falsify``, which is the ``pv.falsify``
    package."""
    from pv.falsify.campaign import falsify_contracts

    return falsify_contracts(contract, all=all, contracts_dir=contracts_dir, falsifiers_dir=falsifiers_dir,
                             evidence_dir=evidence_dir, update=update, pytest_args=pytest_args,
                             in_process=in_process, on_output=on_output, on_contract=on_contract)


def discharge(falsifier: str, *, contract: str, by: str, reason: str, artifacts: Sequence[str] = (),
              contracts_dir: PathLike | None = None, evidence_dir: PathLike | None = None) -> DischargeResult:
    """Close ``falsifier`` of ``contract`` past FUNCTIONAL, only on live evidence for every target
    of its discharge matrix (``PvError`` saying what is missing otherwise). Same as ``pv discharge``."""
    from pv.falsify.discharge import discharge_named

    return discharge_named(falsifier, contract=contract, by=by, reason=reason, artifacts=tuple(artifacts),
                           contracts_dir=_path(contracts_dir), evidence_dir=_path(evidence_dir))


def prune_evidence(*, contracts_dir: PathLike | None = None, evidence_dir: PathLike | None = None,
                   keep_days: int | None = None, before: str | None = None, dry_run: bool = False) -> PruneReport:
    """Remove records older than ``keep_days`` (or finished before ``before``) that no status rests
    on, writing a prune record into each pruned chain; ``dry_run`` removes nothing. Same as
    ``pv evidence prune``."""
    from pv.report.prune import prune_named

    return prune_named(contracts_dir=_path(contracts_dir), evidence_dir=_path(evidence_dir), keep_days=keep_days,
                       before=before, dry_run=dry_run)


def acknowledge(contract: PathLike, *, by: str, reason: str, baseline: str | None = None,
                contracts_dir: PathLike | None = None) -> Acknowledged:
    """Record in ``contract`` (an id, a file stem or a path) who accepts its claim, weaker than at
    ``baseline``, and why: the one way a weaker claim passes the gate. Same as ``pv acknowledge``."""
    from pv.report.acknowledge import acknowledge as run_acknowledge

    return run_acknowledge(os.fspath(contract), by=by, reason=reason, baseline=baseline,
                           contract_paths=[Path(contracts_dir)] if contracts_dir is not None else [])


def scaffold(contract: PathLike, *, contracts_dir: PathLike | None = None, tests_dir: PathLike | None = None,
             output: PathLike | None = None) -> Scaffolded:
    """Append a failing test skeleton for each falsifier of ``contract`` that no test binds:
    ``.added``, ``.test_entries`` (the ``test:`` lines to write). Same as ``pv scaffold``."""
    from pv.contract.scaffold import scaffold_contract

    return scaffold_contract(os.fspath(contract), contracts_dir=_path(contracts_dir), tests_dir=_path(tests_dir),
                             output=_path(output))


def graph(paths: Iterable[PathLike] | None = None) -> Graph:
    """The ``depends_on`` graph of the contracts under ``paths`` (default: the repository's):
    ``.nodes``, ``.edges``, ``.missing``, ``.cycles``. Same as ``pv graph``."""
    from pv.contract.graph import graph_of

    return graph_of(paths or ())


def coverage(paths: Iterable[PathLike] | None = None, *, tests: Iterable[PathLike] | None = None) -> Coverage:
    """Obligations no falsifier enforces, falsifiers no test binds and marked tests that bind no
    falsifier: ``.complete``, ``.failed(strict)``, ``.to_json()``. Same as ``pv coverage``."""
    from pv.contract.coverage import coverage_of

    return coverage_of(paths or (), [Path(p) for p in tests or ()])


def schema(*, write: bool | PathLike = False, force: bool = False) -> Schemas:
    """pv's contract schema (``.text``); with ``write`` (True: ``<repo>/schemas``, or a folder) the
    schemas written where contracts' modelines can name them (``.written``). Same as ``pv schema``."""
    from pv.contract.modeline import schemas
    from pv.repo import repo_root

    return schemas(repo_root(), write, force=force)
