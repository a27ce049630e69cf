"""What ran on each side of a bisection, as the captures themselves record it.

A bisection of two folders someone else captured must not describe them with
the command line's defaults: the engine, its fault, the dtype and the input
token ids are read from each side's manifest (a generation's first step for
``--generate`` captures). The same record says whether pv can rerun the engine
under test one layer at a time (``--isolate``), and with which fault, and whether
both sides ran the same tokens (``pv diff`` asks this too, through ``checked_diff``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pv.compare.bisect_plan import BisectPlan
from pv.compare.records import DiffReport
from pv.errors import PvError


def run_record(root: Path) -> Mapping[str, Any]:
    """The ``run`` block of a capture's manifest (of step 0 for a generation); {} when there is none."""
    from pv.capture.store import directory, steps

    folder = steps.step_dir(root, 0) if (root / steps.GENERATE_FILE).is_file() else root
    try:
        manifest = directory.open_capture(folder).manifest or {}
    except PvError:
        return {}
    run = manifest.get("run")
    return run if isinstance(run, dict) else {}


def engine_of(run: Mapping[str, Any]) -> str | None:
    """``pv with fault attn_residual_dropped@2``, ``hf``; None when the manifest does not say."""
    engine = run.get("engine")
    if not isinstance(engine, str):
        return None
    fault = fault_of(run)
    return f"{engine} with fault {fault}" if fault else engine


def fault_of(run: Mapping[str, Any]) -> str | None:
    fault = run.get("fault")
    if isinstance(fault, dict) and isinstance(fault.get("name"), str):
        layer = fault.get("layer")
        return f"{fault['name']}@{layer}" if isinstance(layer, int) else str(fault["name"])
    return None


def _input(run: Mapping[str, Any]) -> str | None:
    ids = run.get("token_ids")
    if isinstance(ids, list) and ids:
        shown = ",".join(str(i) for i in ids[:16]) + (",..." if len(ids) > 16 else "")
        return f"tokens {shown} ({len(ids)})"
    return None


def context(plan: BisectPlan, a: Path, b: Path) -> Iterator[str]:
    """Lines naming the model, the engine under test, the reference and the input."""
    if plan.model is not None:
        yield f"model: `{plan.model}`"
    if plan.captures:
        fed = " (the engine under test is fed the reference's tokens)" if plan.generate else ""
        yield (f"engine under test: {plan.engine}{' with fault ' + plan.fault if plan.fault else ''}; "
               f"reference: {plan.reference}{fed}")
        yield f"input: {'tokens ' + plan.tokens if plan.tokens else repr(plan.prompt)}"
        if plan.streams:
            yield "compared while both ran: nothing written (--keep DIR writes both captures)"
        elif plan.keep is None:
            yield "captures: in a temporary directory, deleted afterwards (--keep DIR keeps them)"
        return
    ra, rb = run_record(a), run_record(b)
    unchecked = same_input(a, b)  # different ids: one PvError line, before anything is compared
    yield (f"engine under test: {engine_of(ra) or 'not recorded in A'}; "
           f"reference: {engine_of(rb) or 'not recorded in B'}")
    ia, ib = _input(ra), _input(rb)
    if ia is not None or ib is not None:
        yield f"input: {ia or 'not recorded in A'}" + ("" if ia == ib else f"; B ran {ib or 'unrecorded tokens'}")
    if unchecked is not None:
        yield f"input not checked: {unchecked}"


def same_input(a: Path, b: Path) -> str | None:
    """The one token check (``pv.capture.tokens.same_input``) on the ids each side's manifest
    records (a generation's first step): raises when they differ, a line when only one records them."""
    from pv.capture.tokens import recorded
    from pv.capture.tokens import same_input as check

    return check(recorded(run_record(a)), recorded(run_record(b)))


def checked_diff(a: str | Path, b: str | Path, **kwargs: Any) -> DiffReport:
    """``pv diff``: ``diff_paths`` of two files or folders, folders first checked to have run the same
    tokens (``same_input``); a side without ids becomes a note of the report."""
    from pv.capture.store.steps import step_of
    from pv.compare.diff import _config, diff_captures, diff_paths

    pa, pb = Path(a), Path(b)
    note = same_input(pa, pb) if pa.is_dir() and pb.is_dir() else None
    records = (step_of(pa), step_of(pb)) if pa.is_dir() and pb.is_dir() else (None, None)
    if records != (None, None):  # a generation's step: manifest-less files laid out from generate.json
        from pv.compare.step_pairs import open_pair

        report = diff_captures(*open_pair(pa, pb, *records, _config(kwargs.get("model"))), **kwargs)
    else:
        report = diff_paths(pa, pb, **kwargs)
    return report if note is None else replace(report, notes=(*report.notes, note))


@dataclass(frozen=True)
class Rerun:
    """How ``--isolate`` reruns the engine under test: which runner, fault and dtype."""

    kind: Any  # pv.capture.runners.RunnerKind
    fault: str | None
    dtype: str


def rerunnable(plan: BisectPlan, a: Path | None, loaded: Any) -> Rerun:
    """The engine that produced A, rerunnable layer by layer, or one ``PvError`` line saying why not."""
    from pv.capture import runners

    if plan.captures or a is None:
        return Rerun(runners.get(plan.engine), plan.fault, plan.dtype)
    run = run_record(a)
    engine = run.get("engine")
    if not isinstance(engine, str):
        raise PvError(f"--isolate reruns the engine that wrote A, but {a}'s manifest does not name one "
                      "(an imported capture?): pv cannot rerun it layer by layer")
    try:
        kind = runners.get(engine)
    except PvError:
        raise PvError(f"--isolate reruns the engine that wrote A, but A was written by '{engine}', "
                      "which pv does not run") from None
    if not kind.isolates:
        raise PvError(f"--isolate reruns the engine that wrote A layer by layer: A was written by "
                      f"{kind.description}, which pv cannot rerun one layer at a time")
    model = run.get("model")
    fingerprint = model.get("fingerprint") if isinstance(model, dict) else None
    if isinstance(fingerprint, str) and fingerprint != str(loaded.fingerprint):
        raise PvError(f"--isolate: A was captured from another model than --model {plan.model} "
                      "(their fingerprints differ)")
    dtype = run.get("dtype")
    return Rerun(kind, fault_of(run), dtype if isinstance(dtype, str) else plan.dtype)


__all__ = ["Rerun", "checked_diff", "context", "engine_of", "fault_of", "rerunnable", "run_record", "same_input"]
