"""Promotion: the status a falsifier earns from its evidence. Pure functions, no I/O.

The rules (also in ``docs/falsify.md``), for one run of a falsifier whose bound
tests are aggregated first (any failure fails the run; otherwise any pass passes
it, live if any passing test's facts meet ``live_requirements``; otherwise it
was skipped, "for a missing fixture" if any skip said so):

- failed                                  -> FALSIFIED
- passed and live (or no requirements)    -> FUNCTIONAL (DISCHARGED stays DISCHARGED)
- passed, requirements not met            -> PARTIAL_ALGORITHM_LEVEL, but FUNCTIONAL and
                                             DISCHARGED are never demoted by it
- skipped for a missing fixture           -> BLOCKER_FIXTURE_ABSENT when the status was
                                             PROPOSED (below the blocker rung); otherwise
                                             unchanged. FALSIFIED stays FALSIFIED: a skip is
                                             no evidence that the refutation was fixed.
- skipped for any other reason            -> unchanged

``pv status`` and ``pv gate`` use ``supports``/``backing`` to ask the opposite
question: does the recorded evidence justify the status a contract claims?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pv.contract import ladder
from pv.falsify.evidence import FAILED, PASSED, SKIPPED, EvidenceRecord, TestResult


def _fact_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return any(_fact_matches(actual, w) for w in wanted)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual == wanted
    if isinstance(wanted, str) and isinstance(actual, str):
        a, w = actual.strip().lower(), wanted.strip().lower()
        # "cuda" is met by "cuda:0": a device family names every index in it.
        return a == w or a.startswith(w + ":")
    return bool(actual == wanted)


def meets(facts: Mapping[str, Any], requirements: Mapping[str, Any] | None) -> bool:
    """Whether recorded ``facts`` satisfy every live requirement (none: always)."""
    if not requirements:
        return True
    return all(key in facts and _fact_matches(facts[key], want) for key, want in requirements.items())


@dataclass(frozen=True)
class RunSummary:
    """Several tests of one falsifier folded into one outcome."""

    outcome: str
    reason: str | None
    fixture_absent: bool
    live: bool


def summarize(tests: Sequence[TestResult]) -> RunSummary:
    """Any failure fails the run; the best passing test sets the level; else it skipped."""
    if not tests:
        raise ValueError("a falsifier run needs at least one test result")
    failed = [t for t in tests if t.outcome == FAILED]
    if failed:
        return RunSummary(FAILED, failed[0].reason, False, False)
    passed = [t for t in tests if t.outcome == PASSED]
    if passed:
        return RunSummary(PASSED, None, False, any(t.live for t in passed))
    absent = [t for t in tests if t.fixture_absent]
    reason = (absent or list(tests))[0].reason
    return RunSummary(SKIPPED, reason, bool(absent), False)


def canonical(status: str | None) -> str:
    """Unknown or missing statuses count as PROPOSED (``pv validate`` reports them)."""
    return ladder.normalize(status) or ladder.PROPOSED


def promote(current: str | None, run: RunSummary) -> str:
    """The status after one run, from the status before it."""
    old = canonical(current)
    if run.outcome == FAILED:
        return ladder.FALSIFIED
    if run.outcome == PASSED:
        if old == ladder.DISCHARGED:
            return old
        if run.live:
            return ladder.FUNCTIONAL
        if ladder.rank(old) >= ladder.rank(ladder.FUNCTIONAL):
            return old
        return ladder.PARTIAL
    if run.fixture_absent and old == ladder.PROPOSED:
        return ladder.BLOCKER_FIXTURE_ABSENT
    return old


def promote_record(current: str | None, record: EvidenceRecord) -> str:
    return promote(current, RunSummary(record.outcome, record.reason, record.fixture_absent, record.live))


# --------------------------------------------------------------------------- the reverse question

#: Statuses that claim a pass; everything else asks nothing of the evidence.
_NEEDS_LIVE = (ladder.FUNCTIONAL, ladder.DISCHARGED)


def _since_last_failure(records: Sequence[EvidenceRecord]) -> Sequence[EvidenceRecord]:
    last_fail = max((i for i, r in enumerate(records) if r.outcome == FAILED), default=-1)
    return records[last_fail + 1:]


def supports(status: str | None, records: Sequence[EvidenceRecord]) -> tuple[bool, str]:
    """Whether ``records`` (oldest first) justify ``status``, with a reason when they do not.

    FUNCTIONAL (and DISCHARGED) need a passing live record, PARTIAL_ALGORITHM_LEVEL
    any passing record, in both cases newer than the latest failing record.
    Lower statuses claim nothing and are always supported.
    """
    canon = canonical(status)
    if canon in _NEEDS_LIVE or canon == ladder.PARTIAL:
        recent = _since_last_failure(records)
        failed_later = len(recent) < len(records)
        if canon in _NEEDS_LIVE:
            if any(r.passed and r.live for r in recent):
                return True, ""
            tail = " after the latest failing record" if failed_later else ""
            return False, f"{canon} but no passing live record{tail}"
        if any(r.passed for r in recent):
            return True, ""
        tail = " after the latest failing record" if failed_later else ""
        return False, f"{canon} but no passing record{tail}"
    return True, ""


def backing(status: str | None, records: Sequence[EvidenceRecord]) -> EvidenceRecord | None:
    """The latest record consistent with ``status`` (the evidence behind it), if any."""
    canon = canonical(status)
    for record in reversed(records):
        if canon in _NEEDS_LIVE and record.passed and record.live:
            return record
        if canon == ladder.PARTIAL and record.passed:
            return record
        if canon == ladder.FALSIFIED and record.outcome == FAILED:
            return record
        if ladder.is_blocker(canon) and record.outcome == SKIPPED:
            return record
    return None
