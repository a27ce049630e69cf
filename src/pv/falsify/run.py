"""Run a contract's falsifiers through pytest and turn the results into evidence.

The steps are plain functions so each can be tested: build the pytest argument
list, run it and read back the spool the plugin filled (``pv.falsify.session``),
fold the tests of each falsifier into one ``EvidenceRecord``, promote, write
records, rewrite statuses.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pv import config, files, repo
from pv.contract import ladder
from pv.contract.model import Contract, Falsifier, contract_from_text, load_contract
from pv.errors import ExitCode, PvError
from pv.falsify import facts as fact_rules
from pv.falsify import judge, store
from pv.falsify import records as rec
from pv.falsify.judge import canonical
from pv.falsify.rewrite import rewrite_statuses
from pv.falsify.session import Echo, read_spool, run_pytest


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
    outcome: str  # passed | failed | error | skipped | not run
    reason: str | None
    facts: Mapping[str, Any]
    old: str | None
    new: str | None
    live: bool = False
    record_path: Path | None = None
    #: The falsifier names live requirements (so "live" says something).
    has_requirements: bool = False
    #: Why a pass or an error moved no status (a modified covered file, a test that errored).
    why: str | None = None
    #: Why a pass is not live: the requirements its measured facts did not meet.
    not_live: str | None = None


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


def _deciding(tests: Sequence[rec.TestResult], outcome: str) -> rec.TestResult:
    """The test whose facts stand for the run: the failure, the first pass, or a skip."""
    return next((t for t in tests if t.outcome == outcome), tests[0])


def fold(tests: Sequence[rec.TestResult]) -> tuple[str, str | None, bool]:
    """(outcome, reason, fixture_absent): any failure fails, else any error errs, else any pass
    passes, else skipped."""
    if not tests:
        raise ValueError("a falsifier run needs at least one test result")
    failed = [t for t in tests if t.outcome == rec.FAILED]
    if failed:
        return rec.FAILED, failed[0].reason, False
    errored = [t for t in tests if t.outcome == rec.ERROR]
    if errored:
        return rec.ERROR, errored[0].reason, False
    if any(t.outcome == rec.PASSED for t in tests):
        return rec.PASSED, None, False
    absent = [t for t in tests if t.fixture_absent]
    return rec.SKIPPED, (absent or list(tests))[0].reason, bool(absent)


def _test_result(r: Mapping[str, Any]) -> rec.TestResult:
    return rec.TestResult(
        nodeid=str(r["nodeid"]), outcome=str(r["outcome"]), reason=r.get("reason"),
        fixture_absent=bool(r.get("fixture_absent")), duration_s=float(r.get("duration_s", 0.0)),
        measured=dict(r.get("measured") or {}), declared=dict(r.get("declared") or {}),
        metrics=dict(r.get("metrics") or {}), environment=dict(r.get("environment") or {}))


def dirty_paths(root: Path, contract: Contract, falsifier: Falsifier) -> list[str] | None:
    """Covered files that differ from HEAD, plus the claim if the contract's committed claim differs.

    Only the claim counts for the contract file: the statuses that ``pv falsify``
    itself writes there never make the next run dirty.
    """
    changed = repo.modified(root, list(falsifier.covered_files))
    if changed is None:
        return None
    try:
        rel = contract.path.resolve().relative_to(root).as_posix()
    except ValueError:
        return changed + [f"{contract.path} (outside the repository)"]
    committed = repo.show(root, "HEAD", rel)
    if committed is None:
        return changed + [f"{rel} (not committed)"]
    try:
        before = contract_from_text(contract.path, committed.decode("utf-8")).falsifier(falsifier.id)
    except (PvError, UnicodeDecodeError):
        before = None
    if before is None or before.claim_digest != falsifier.claim_digest:
        changed.append(f"{rel} (the claim of {falsifier.id})")
    return changed


def build_record(contract: Contract, falsifier: Falsifier, results: Sequence[Mapping[str, Any]],
                 *, root: Path, started: str, finished: str, update: bool,
                 host: str | None = None, git: Mapping[str, Any] | None = None,
                 previous: str | None = None, old_status: str | None = None) -> rec.EvidenceRecord:
    """One unsealed evidence record from the raw per-test results of one falsifier."""
    tests = tuple(_test_result(r) for r in sorted(results, key=lambda r: str(r["nodeid"])))
    outcome, reason, absent = fold(tests)
    lead = _deciding(tests, outcome)
    metrics: dict[str, float | None] = {}
    for t in tests:
        metrics.update(t.metrics)
    metrics.update(lead.metrics)
    if git is None:
        git = {"commit": repo.head_commit(root), "dirty": dirty_paths(root, contract, falsifier)}
    subjects: dict[str, str | None] = dict(rec.hash_files(root, falsifier.covered_files))
    subjects[rec.claim_subject(contract.id, falsifier.id)] = falsifier.claim_digest
    old = canonical(old_status if old_status is not None else falsifier.status)
    claim: dict[str, Any] = {"tests": list(falsifier.tests), "live_requirements": dict(falsifier.live_requirements)}
    if falsifier.discharge_matrix:
        claim["discharge_matrix"] = [dict(t) for t in falsifier.discharge_matrix]
    return rec.EvidenceRecord(
        contract_id=contract.id, contract_version=contract.version, falsifier_id=falsifier.id,
        outcome=outcome, reason=reason, fixture_absent=absent, tests=tests, metrics=metrics,
        started_at=started, finished_at=finished, duration_s=round(sum(t.duration_s for t in tests), 6),
        host=host or rec.default_host(), pid=rec.current_pid(), versions=rec.versions(),
        git=dict(git), subjects=subjects, claim=claim,
        promotion={"old": old, "new": old, "applied": False, "why": None}, previous=previous)


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


def preflight(plan: RunPlan) -> None:
    """Everything that can be checked before a test runs or a byte is written.

    The contract must pass ``pv validate`` (errors only): a run never records
    evidence for a contract whose ids or structure the validator refuses.
    """
    from pv.contract.validate import validate_files

    report = validate_files([plan.contract.path], jobs=1)
    if not report.ok:
        first = next(f for f in report.findings if f.is_error)
        more = f" (and {report.errors - 1} more error(s))" if report.errors > 1 else ""
        raise PvError(f"{first.file}:{first.line}:{first.column}: {first.rule} {first.message}{more}; "
                      "pv falsify runs only valid contracts (see pv validate)")
    if not plan.contract.falsifiers:
        raise PvError(f"contract {plan.contract.id} has no falsification_tests to run")
    if not plan.falsifiers_dir.is_dir():
        raise PvError(f"no falsifier folder at {plan.falsifiers_dir}")
    store.check_id(plan.contract.id, "contract id")
    seen: set[str] = set()
    for f in plan.contract.falsifiers:
        store.check_id(f.id, "falsifier id")
        if f.id in seen:
            raise PvError(f"falsifier id {f.id} appears twice in contract {plan.contract.id}")
        seen.add(f.id)
        if not f.tests:
            raise PvError(f"{f.id}: the contract's test: names no pytest node id "
                          "(write e.g. falsifiers/test_x.py::test_name; a list is fine)")
    store.check_inside(plan.evidence_dir, plan.evidence_dir / plan.contract.id, plan.root)


def _quiet(line: str) -> None:
    """Progress nobody asked for: the library prints nothing of its own."""


def falsify(plan: RunPlan, echo: Echo = _quiet) -> FalsifyResult:
    """Run, record, promote. Raises PvError on trouble (nothing written then). Progress lines
    (each test as it finishes) go to ``echo``."""
    preflight(plan)
    fresh = config.load(plan.root).stale_blocks
    with tempfile.TemporaryDirectory(prefix="pv-falsify-") as tmp:
        spool = Path(tmp)
        argv = pytest_argv(plan, spool)
        started = rec.iso(rec.utc_now())
        gits = {f.id: {"commit": repo.head_commit(plan.root), "dirty": dirty_paths(plan.root, plan.contract, f)}
                for f in plan.contract.falsifiers}
        code, tail = run_pytest(argv, plan.root, echo, in_process=plan.in_process)
        finished = rec.iso(rec.utc_now())
        spooled = read_spool(spool)
    trouble = spooled.trouble()
    if trouble:
        raise PvError(trouble)
    results = list(spooled.results)
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
    key = rec.key_from_env()
    ignore_locks(plan.evidence_dir)
    with files.contract_locked(plan.evidence_dir, plan.contract.id):
        return _record_and_promote(plan, by_id, gits, started, finished, key, fresh)


def _record_and_promote(plan: RunPlan, by_id: Mapping[str, list[dict[str, Any]]],
                        gits: Mapping[str, Mapping[str, Any]], started: str, finished: str,
                        key: bytes | None, fresh: bool) -> FalsifyResult:
    """Under the contract's lock: re-read the statuses, chain and write records, rewrite once."""
    contract = load_contract(plan.contract.path)  # statuses as they are now, not at the start
    rows: list[Row] = []
    records: list[Path] = []
    updates: dict[str, str] = {}
    for f in plan.contract.falsifiers:
        now = contract.falsifier(f.id)
        old = now.status if now is not None else f.status
        if f.id not in by_id:
            rows.append(Row(f.id, "not run", None, {}, old, old))
            continue
        stored = store.load_stored(plan.evidence_dir, contract.id, f.id)
        record = build_record(plan.contract, f, by_id[f.id], root=plan.root, started=started,
                              finished=finished, update=plan.update, git=gits[f.id],
                              previous=store.head(stored), old_status=old)
        new, why = _promotion(record, stored, f, old, plan.root, key, fresh)
        record = replace(record, promotion={"old": canonical(old), "new": new, "applied": plan.update,
                                            "why": why}).sealed(key)
        path = store.write_record(plan.evidence_dir, record, root=plan.root)
        records.append(path)
        if plan.update and new != canonical(old):
            updates[f.id] = new
        live = [t for t in judge.counted(record, f)
                if t.outcome == rec.PASSED and judge.meets_target(t, f.live_requirements)]
        lead = live[0] if live and record.outcome == rec.PASSED else _deciding(record.tests, record.outcome)
        rows.append(Row(f.id, record.outcome, record.reason, dict(lead.measured), old, new,
                        bool(live), path, bool(f.live_requirements), why,
                        None if live else why_not_live(record, f)))
    meta = standing(contract, updates) if plan.update else None
    if updates or meta is not None:
        rewrite_statuses(plan.contract.path, updates, metadata_status=meta)
    failed = any(r.outcome in (rec.FAILED, rec.ERROR) for r in rows)
    meta_change = (contract.metadata_status, meta) if meta is not None else None
    return FalsifyResult(tuple(rows), int(ExitCode.FINDINGS if failed else ExitCode.OK), tuple(records),
                         meta_change)


#: What a pass that is not live says when its test handed pv nothing to measure facts from.
NOTHING_MEASURED = "the test handed pv nothing to measure: call falsifier_record.observe(...)"


def why_not_live(record: rec.EvidenceRecord, f: Falsifier) -> str | None:
    """For a passing run none of whose passes is live: the requirements that the closest
    counted pass did not meet (``device=cuda (measured: cpu)``), as ``judge.reach`` says it."""
    passing = [t for t in judge.counted(record, f) if t.outcome == rec.PASSED]
    if record.outcome != rec.PASSED or not passing or not f.live_requirements:
        return None
    reqs = dict(f.live_requirements)
    closest = min(reversed(passing), key=lambda t: len(fact_rules.unmet(t.measured, reqs, t.environment)))
    misses = fact_rules.unmet(closest.measured, reqs, closest.environment)
    if not misses:
        return None
    text = "; ".join(misses)
    return f"{text}; {NOTHING_MEASURED}" if not closest.measured else text


#: ``evidence/.gitignore``, written when the evidence folder has none: lock files are no evidence.
EVIDENCE_GITIGNORE = b"# pv falsify serialises runs on evidence/<contract-id>/.lock: not evidence\n**/.lock\n"


def ignore_locks(evidence_dir: Path) -> None:
    """Create ``evidence_dir/.gitignore`` ignoring the lock files, unless one exists (never replaced)."""
    target = evidence_dir / ".gitignore"
    if os.path.lexists(target):
        return
    try:
        files.create_bytes(target, EVIDENCE_GITIGNORE)
    except FileExistsError:
        pass  # another run made it first
    except OSError as exc:
        raise PvError(f"cannot write {target}: {exc.strerror or exc}") from None


def _promotion(record: rec.EvidenceRecord, stored: Sequence[store.StoredRecord], f: Falsifier,
               old: str | None, root: Path, key: bytes | None, fresh: bool) -> tuple[str, str | None]:
    """The status this run leads to, judged exactly as ``pv gate`` will judge it (``fresh``: the
    repository's stale-evidence policy, ``pv.config``)."""
    run = store.as_stored(record.sealed(key))
    after = judge.support(f, [*stored, run], root=root, key=key, fresh=fresh)
    return judge.new_status(old, run, after, f)


__all__ = ["FalsifyResult", "Row", "RunPlan", "build_record", "falsify", "pytest_argv", "read_spool", "why_not_live"]
