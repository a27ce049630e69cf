"""Run a contract's falsifiers through pytest and turn the results into evidence.

The steps are plain functions so each can be tested: build the pytest argument
list, run it (in a subprocess by default, so a crashing test or a CUDA context
cannot take the caller down, and so ``-n 2`` works; in-process on request),
read the spool the plugin filled (``collect-*.json`` from every collecting
process, ``result-*.json`` from the controller), fold the tests of each
falsifier into one ``EvidenceRecord``, promote, write records, rewrite statuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv.contract import ladder
from pv.errors import ExitCode, PvError
from pv.falsify import evidence as ev
from pv.falsify.catalog import Contract, Falsifier
from pv.falsify.plugin import PROGRESS_PREFIX
from pv.falsify.promote import canonical, meets, promote, summarize
from pv.falsify.rewrite import rewrite_statuses

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunPlan:
    """Everything a falsify run needs, checked before any test starts."""

    contract: Contract
    contract_paths: tuple[Path, ...]
    falsifiers_dir: Path
    root: Path
    evidence_dir: Path
    update: bool = True
    pytest_args: tuple[str, ...] = ()
    in_process: bool = False


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    falsifier_id: str
    outcome: str  # passed | failed | skipped | not run
    reason: str | None
    facts: Mapping[str, Any]
    old: str | None
    new: str | None
    live: bool = False
    record_path: Path | None = None
    #: The falsifier names live requirements (so "live" says something).
    has_requirements: bool = False


@dataclass(frozen=True)
class FalsifyResult:
    rows: tuple[Row, ...]
    exit_code: int
    records: tuple[Path, ...] = field(default_factory=tuple)
    #: (old, new) when ``metadata.status`` was brought in step with the falsifiers.
    metadata_status: tuple[str | None, str] | None = None


def pytest_argv(plan: RunPlan, spool: Path) -> list[str]:
    argv = [str(plan.falsifiers_dir), "--rootdir", str(plan.root), "-q", "-p", "no:cacheprovider",
            "--pv-spool", str(spool), "--pv-select", plan.contract.id]
    for p in plan.contract_paths:
        argv += ["--pv-contracts", str(p)]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        argv += ["-p", "pv.falsify.plugin"]
    return argv + list(plan.pytest_args)


def _run_subprocess(argv: list[str], cwd: Path, echo: Echo) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: deque[str] = deque(maxlen=60)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *argv], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
    except OSError as exc:
        raise PvError(f"cannot start pytest: {exc}") from None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            at = line.find(PROGRESS_PREFIX)  # may follow pytest's progress dots
            if at >= 0:
                echo(line[at + len(PROGRESS_PREFIX):])
            else:
                tail.append(line)
    finally:
        code = proc.wait()
    return code, list(tail)


def _run_in_process(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    import pytest

    here = os.getcwd()
    os.chdir(cwd)
    try:
        code = int(pytest.main(argv))
    finally:
        os.chdir(here)
    return code, []


def read_spool(spool: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(collection reports, per-test results) the plugin wrote."""
    def load(pattern: str) -> list[dict[str, Any]]:
        out = []
        for p in sorted(spool.glob(pattern)):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise PvError(f"unreadable falsifier result {p.name}: {exc}") from None
        return out
    return load("collect-*.json"), load("result-*.json")


def _deciding(tests: Sequence[ev.TestResult], outcome: str) -> ev.TestResult:
    """The test whose facts stand for the run: the failure, the best pass, or a skip."""
    if outcome == ev.PASSED:
        return next((t for t in tests if t.outcome == ev.PASSED and t.live),
                    next(t for t in tests if t.outcome == ev.PASSED))
    return next((t for t in tests if t.outcome == outcome), tests[0])


def build_record(contract: Contract, falsifier: Falsifier, results: Sequence[Mapping[str, Any]],
                 *, root: Path, started: str, finished: str, update: bool,
                 host: str | None = None, git: Mapping[str, Any] | None = None) -> ev.EvidenceRecord:
    """One evidence record from the raw per-test results of one falsifier."""
    reqs = dict(falsifier.live_requirements)
    tests = tuple(
        ev.TestResult(
            nodeid=r["nodeid"], outcome=r["outcome"], reason=r.get("reason"),
            fixture_absent=bool(r.get("fixture_absent")), duration_s=float(r.get("duration_s", 0.0)),
            facts=dict(r.get("facts") or {}), metrics=dict(r.get("metrics") or {}),
            live=r["outcome"] == ev.PASSED and meets(r.get("facts") or {}, reqs),
        )
        for r in sorted(results, key=lambda r: r["nodeid"])
    )
    run = summarize(tests)
    lead = _deciding(tests, run.outcome)
    metrics: dict[str, float | None] = {}
    for t in tests:
        metrics.update(t.metrics)
    metrics.update(lead.metrics)
    old = canonical(falsifier.status)
    return ev.EvidenceRecord(
        contract_id=contract.id, contract_version=contract.version, falsifier_id=falsifier.id,
        outcome=run.outcome, reason=run.reason, fixture_absent=run.fixture_absent, live=run.live,
        live_requirements=reqs, facts=dict(lead.facts), metrics=metrics, tests=tests,
        started_at=started, finished_at=finished,
        duration_s=round(sum(t.duration_s for t in tests), 6),
        host=host or ev.default_host(), pid=ev.current_pid(), versions=ev.versions(),
        git=dict(git) if git is not None else ev.git_state(root),
        file_hashes=ev.hash_files(root, falsifier.file_paths),
        promotion={"old": old, "new": promote(old, run), "applied": update},
    )


def standing(contract: Contract, updates: Mapping[str, str]) -> str | None:
    """The ``metadata.status`` to write after ``updates``, or None to leave it alone.

    A contract stands where its weakest falsifier stands (unset counts as
    PROPOSED; the blocker family shares one rung), which is what ``pv validate``
    checks. Only a ``metadata.status`` already on the ladder is kept in step;
    a free-form one (``ACTIVE``) or none at all is the author's business.
    """
    claimed = ladder.normalize(contract.metadata_status)
    if claimed is None:
        return None
    statuses = [ladder.normalize(updates.get(f.id, f.status or ladder.PROPOSED)) for f in contract.falsifiers]
    known = [s for s in statuses if s is not None]
    if not known:
        return None
    weakest = min(known, key=ladder.rank)
    return None if ladder.rank(claimed) == ladder.rank(weakest) else weakest


def falsify(plan: RunPlan, echo: Echo = print) -> FalsifyResult:
    """Run, record, promote. Raises PvError on trouble (nothing written then)."""
    if not plan.contract.falsifiers:
        raise PvError(f"contract {plan.contract.id} has no falsification_tests to run")
    if not plan.falsifiers_dir.is_dir():
        raise PvError(f"no falsifier folder at {plan.falsifiers_dir}")
    with tempfile.TemporaryDirectory(prefix="pv-falsify-") as tmp:
        spool = Path(tmp)
        argv = pytest_argv(plan, spool)
        started = ev.iso(ev.utc_now())
        if plan.in_process:
            code, tail = _run_in_process(argv, plan.root)
        else:
            code, tail = _run_subprocess(argv, plan.root, echo)
        finished = ev.iso(ev.utc_now())
        collected, results = read_spool(spool)
    problems = sorted({m for c in collected for m in c.get("problems", [])})
    if problems:
        raise PvError("; ".join(problems))
    if code not in (0, 1, 5) or (code == 1 and not results):
        detail = next((ln for ln in reversed(tail) if ln.strip()), "no output")
        raise PvError(f"pytest could not run the falsifiers (exit {code}): {detail}")
    if not results:
        raise PvError(f"no test bound to contract {plan.contract.id} ran "
                      f"(selection or pytest arguments left nothing)")
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        for fid in r.get("falsifiers", []):
            by_id.setdefault(fid, []).append(r)
    git = ev.git_state(plan.root)
    rows: list[Row] = []
    records: list[Path] = []
    updates: dict[str, str] = {}
    for f in plan.contract.falsifiers:
        if f.id not in by_id:
            rows.append(Row(f.id, "not run", None, {}, f.status, f.status))
            continue
        record = build_record(plan.contract, f, by_id[f.id], root=plan.root, started=started,
                              finished=finished, update=plan.update, git=git)
        path = ev.write_record(plan.evidence_dir, record)
        records.append(path)
        new = record.promotion["new"]
        if plan.update and new != f.status:
            updates[f.id] = new
        rows.append(Row(f.id, record.outcome, record.reason, record.facts, f.status, new,
                        record.live, path, bool(f.live_requirements)))
    meta = standing(plan.contract, updates) if plan.update else None
    if updates or meta is not None:
        rewrite_statuses(plan.contract.path, updates, metadata_status=meta)
    failed = any(r.outcome == ev.FAILED for r in rows)
    meta_change = (plan.contract.metadata_status, meta) if meta is not None else None
    return FalsifyResult(tuple(rows), int(ExitCode.FINDINGS if failed else ExitCode.OK), tuple(records),
                         meta_change)


__all__ = ["FalsifyResult", "Row", "RunPlan", "build_record", "falsify", "pytest_argv", "read_spool"]
