"""What evidence proves, recomputed from records and the contract's current claim. Pure functions.

Nothing stored in a record is trusted as a verdict. For one falsifier:

1. **A record's reach** (``reach``). Only tests that the contract's ``test:`` names
   count. Any failed test makes the record a failure (failures always count,
   whatever else is wrong with the record). A test that errored (an exception
   other than a failed prediction) is no failure: such a record reaches nothing
   and moves no status. A passing record reaches
   ``FUNCTIONAL`` when one counted passing test's *measured* facts meet the
   *current* ``live_requirements`` (none: every pass), else
   ``PARTIAL_ALGORITHM_LEVEL``; it reaches nothing when it is a format-1 record
   (declared facts only), was written while a covered file was modified, is
   unsigned where signatures are required, names no counted test, or failed its
   own integrity check (digest or signature).
2. **Support** (``support``). Records are read in chain order; those after the
   latest failure count. The falsifier is supported up to the best reach among
   them; after a failure that no reaching record follows, only ``FALSIFIED`` is
   supported (a hand edit to PROPOSED or a blocker would hide the refutation);
   ``DISCHARGED`` also needs a discharge record after that failure whose
   backing live records are among them, one for every target of the declared
   matrix (``discharge.matrix``; without one, the live requirements are the only
   target), and whose covered files have not changed since.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.contract import ladder
from pv.contract.model import Falsifier, base_node_id
from pv.falsify import facts as fact_rules
from pv.falsify.records import (
    DISCHARGE,
    ERROR,
    FAILED,
    PASSED,
    PRUNE,
    EvidenceRecord,
    signature_ok,
)
from pv.falsify.store import StoredRecord


@dataclass(frozen=True)
class Reach:
    """How far one record carries its falsifier, and why not further."""

    #: FUNCTIONAL, PARTIAL_ALGORITHM_LEVEL, or None (it backs no status).
    level: str | None
    failed: bool
    why: str = ""
    #: Node ids of counted passing tests whose measured facts meet the requirements.
    live_tests: tuple[str, ...] = ()


def integrity(stored: StoredRecord, key: bytes | None) -> str | None:
    """Why a format-2 record cannot be trusted as written (edited, badly signed), or None."""
    record = stored.record
    if record.legacy:
        return None
    computed = stored.content_digest if stored.content_digest is not None else record.content_digest()
    if record.digest != computed:
        return "its content does not match its digest (edited after it was written)"
    if key is not None and signature_ok(record, key) is False:
        return "its signature does not verify with PV_EVIDENCE_KEY"
    return None


def counted(record: EvidenceRecord, claim: Falsifier) -> list[Any]:
    named = set(claim.tests)
    return [t for t in record.tests if base_node_id(t.nodeid) in named]


def meets_target(test: Any, requirements: Mapping[str, Any]) -> bool:
    return fact_rules.meets(test.measured, requirements, test.environment)


def reach(stored: StoredRecord, claim: Falsifier, *, key: bytes | None = None,
          require_signed: bool = False, memo: dict[int, tuple[Any, Reach]] | None = None) -> Reach:
    """How far one record carries ``claim``. ``memo`` (one per claim, for one call over many
    records) keeps what a record's tests reach, by the tests' identity: the records of a
    chain read by ``pv.falsify.reading`` share one tuple of tests wherever their text repeats."""
    record = stored.record
    if record.kind == DISCHARGE:
        return Reach(None, False, "a discharge record")
    if record.kind == PRUNE:
        return Reach(None, False, "a prune record")
    if record.outcome == FAILED or any(t.outcome == FAILED for t in record.tests):
        return Reach(None, True)
    broken = errored(record)
    if broken is not None:
        return Reach(None, False, broken)
    if record.outcome != PASSED:
        return Reach(None, False, f"the run {record.outcome}")
    bad = integrity(stored, key)
    if bad:
        return Reach(None, False, bad)
    if record.legacy:
        return Reach(None, False, "a format-1 record: its facts were declared, not measured")
    dirty = record.git.get("dirty")
    if dirty:
        return Reach(None, False, f"written while {', '.join(dirty[:3])} differed from the commit")
    if require_signed and (key is None or signature_ok(record, key) is not True):
        return Reach(None, False, "not signed with the evidence key")
    if memo is None:
        return _tests_reach(record, claim)
    seen = memo.get(id(record.tests))
    if seen is None or seen[0] is not record.tests:
        seen = memo[id(record.tests)] = (record.tests, _tests_reach(record, claim))
    return seen[1]


def _tests_reach(record: EvidenceRecord, claim: Falsifier) -> Reach:
    """How far a passing, intact record's counted tests carry ``claim``."""
    passing = [t for t in counted(record, claim) if t.outcome == PASSED]
    if not passing:
        others = ", ".join(t.nodeid for t in record.tests if t.outcome == PASSED)[:200]
        return Reach(None, False, f"no passing test that the contract's test: names (passed: {others or 'none'})")
    reqs = dict(claim.live_requirements)
    live = tuple(t.nodeid for t in passing if meets_target(t, reqs))
    if live:
        return Reach(ladder.FUNCTIONAL, False, live_tests=live)
    closest = min(reversed(passing), key=lambda t: len(fact_rules.unmet(t.measured, reqs, t.environment)))
    misses = fact_rules.unmet(closest.measured, reqs, closest.environment)
    return Reach(ladder.PARTIAL, False, "live requirements not met: " + "; ".join(misses))


def errored(record: EvidenceRecord) -> str | None:
    """``<node id> errored: <reason>`` for a record's first errored test (or an error outcome)."""
    test = next((t for t in record.tests if t.outcome == ERROR), None)
    if test is not None:
        return f"{test.nodeid} errored: {test.reason or 'no reason given'}"
    return f"the run errored: {record.reason or 'no reason given'}" if record.outcome == ERROR else None


@dataclass(frozen=True)
class Support:
    """How far a falsifier's evidence reaches, with the records behind it."""

    level: str | None
    backing: StoredRecord | None
    #: Why no record after the latest failure reaches further (for messages).
    why: str
    failed_later: bool
    discharge: StoredRecord | None = None
    #: Why no discharge record stands (for messages), when the evidence reaches FUNCTIONAL.
    discharge_why: str = ""
    #: Under ``fresh``: the newest record that would reach FUNCTIONAL but is stale.
    stale_live: StoredRecord | None = None
    #: The latest failing record, and the record ``why`` comes from (what a prune must keep).
    failure: StoredRecord | None = None
    why_record: StoredRecord | None = None

    def allows(self, status: str | None) -> bool:
        canon = canonical(status)
        if self.failed_later and self.level is None and self.backing is None:
            # The newest word on record is a refutation: nothing but FALSIFIED may hide it.
            return canon == ladder.FALSIFIED
        if canon == ladder.DISCHARGED:
            return self.discharge is not None
        if canon in (ladder.FUNCTIONAL, ladder.PARTIAL):
            return self.level is not None and ladder.rank(self.level) >= ladder.rank(canon)
        return True


def canonical(status: str | None) -> str:
    """Unknown or missing statuses count as PROPOSED (``pv validate`` reports them)."""
    return ladder.normalize(status) or ladder.PROPOSED


def _since_failure(stored: Sequence[StoredRecord]) -> tuple[list[StoredRecord], bool]:
    last = _last_failure(stored)
    return list(stored[last + 1:]), last >= 0


def _last_failure(stored: Sequence[StoredRecord]) -> int:
    return max((i for i, s in enumerate(stored)
                if s.record.outcome == FAILED or any(t.outcome == FAILED for t in s.record.tests)), default=-1)


def matrix(claim: Falsifier) -> list[dict[str, Any]]:
    """Discharge targets: each declared target merged onto the live requirements."""
    base = dict(claim.live_requirements)
    return [{**base, **t} for t in claim.discharge_matrix] or [base]


def discharge_backing(recent: Sequence[StoredRecord], claim: Falsifier, reaches: Mapping[str, Reach]) -> \
        tuple[list[str], list[dict[str, Any]]]:
    """For each matrix target, a live record meeting it (file sha256), and the targets none meets."""
    found, missing = [], []
    for target in matrix(claim):
        hit = next((s.file_sha256 for s in reversed(recent)
                    if reaches[s.file_sha256].level == ladder.FUNCTIONAL
                    and any(meets_target(t, target) for t in counted(s.record, claim) if t.outcome == PASSED)),
                   None)
        if hit is None:
            missing.append(target)
        else:
            found.append(hit)
    return found, missing


def _freshen(reaches: dict[str, Reach], stored: Sequence[StoredRecord], claim: Falsifier,
             root: Path, hashes: dict[str, str | None]) -> StoredRecord | None:
    """Cap every stale record's reach at PARTIAL (in place); the newest one capped, or None.

    A record is stale when a file it covers, or the falsifier's claim, changed since
    it ran: it proved the claim for other code, so it is no live evidence for this.
    """
    from pv.falsify.records import stale_subjects

    capped = None
    for s in stored:
        r = reaches[s.file_sha256]
        changed = stale_subjects(s.record, root, claim.claim_digest, hashes) if r.level == ladder.FUNCTIONAL else []
        if changed:
            reaches[s.file_sha256] = Reach(ladder.PARTIAL, False, f"stale: {stale_phrase(changed)} changed "
                                           "since it ran")
            capped = s
    return capped


def stale_phrase(items: Sequence[str]) -> str:
    """``a.py``, ``a.py and b.py``, ``a.py, b.py and the falsifier's claim in the contract``."""
    from pv.falsify.records import CLAIM_CHANGED

    parts = [p for p in items if p != CLAIM_CHANGED] + [p for p in items if p == CLAIM_CHANGED]
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def support(claim: Falsifier, stored: Sequence[StoredRecord], *, root: Path | None = None,
            key: bytes | None = None, require_signed: bool = False, fresh: bool = False,
            hashes: dict[str, str | None] | None = None) -> Support:
    """How far ``stored`` carries ``claim``; ``fresh`` (with ``root``): stale records reach at most
    PARTIAL_ALGORITHM_LEVEL (the repository's default policy, ``pv.config``). ``hashes`` memoises
    the covered files' hashes now (``records.stale_subjects``) across calls on one tree."""
    hashes = {} if hashes is None else hashes
    last = _last_failure(stored)
    recent, failed = list(stored[last + 1:]), last >= 0
    memo: dict[int, tuple[Any, Reach]] = {}
    reaches = {s.file_sha256: reach(s, claim, key=key, require_signed=require_signed, memo=memo) for s in stored}
    capped = _freshen(reaches, recent, claim, root, hashes) if fresh and root is not None else None
    best: StoredRecord | None = None
    top: int | None = None
    ranks: dict[str, int] = {}
    for s in recent:
        lvl = reaches[s.file_sha256].level
        if lvl is None:
            continue
        rank = ranks[lvl] if lvl in ranks else ranks.setdefault(lvl, ladder.rank(lvl))
        if top is None or rank >= top:  # the newest of the best reach
            best, top = s, rank
    level = reaches[best.file_sha256].level if best is not None else None
    said = next((s for s in reversed(recent) if reaches[s.file_sha256].why and s.record.kind not in (DISCHARGE, PRUNE)),
                None)
    why = reaches[said.file_sha256].why if said is not None else (
        "no record after the latest failing record" if failed else "no record")
    dis, dis_why = None, ""
    if level == ladder.FUNCTIONAL:
        dis, dis_why = _valid_discharge(recent, claim, reaches, root, key, require_signed, hashes)
    return Support(level, best, why, failed, dis, dis_why, capped if level != ladder.FUNCTIONAL else None,
                   stored[last] if last >= 0 else None, said)


def _discharge_problem(s: StoredRecord, recent: Sequence[StoredRecord], claim: Falsifier,
                       reaches: Mapping[str, Reach], root: Path | None, key: bytes | None,
                       require_signed: bool, hashes: dict[str, str | None]) -> str | None:
    """Why the discharge record ``s`` no longer stands, or None when it does."""
    from pv.falsify.records import stale_subjects

    rec = s.record
    bad = integrity(s, key)
    if rec.discharge is None or bad:
        return bad or "it holds no discharge"
    if require_signed and (key is None or signature_ok(rec, key) is not True):
        return "it is not signed with the evidence key"
    present = {x.file_sha256 for x in recent if reaches[x.file_sha256].level == ladder.FUNCTIONAL}
    gone = [b for b in rec.discharge.get("backing", []) if b not in present]
    if gone:
        return (f"{len(gone)} live record(s) it rests on no longer reach FUNCTIONAL (missing, stale or "
                "superseded by a failure)")
    missing = discharge_backing(recent, claim, reaches)[1]
    if missing:
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in t.items()) for t in missing)
        return f"no live pass meets the discharge matrix target(s) {shown}"
    if root is not None:
        changed = stale_subjects(rec, root, claim.claim_digest, hashes)
        if changed:
            return f"{stale_phrase(changed)} changed since it was written"
    return None


def _valid_discharge(recent: Sequence[StoredRecord], claim: Falsifier, reaches: Mapping[str, Reach],
                     root: Path | None, key: bytes | None, require_signed: bool,
                     hashes: dict[str, str | None]) -> tuple[StoredRecord | None, str]:
    """The newest discharge record that still stands, or None and why the newest one does not."""
    why = ""
    for s in reversed(recent):
        if s.record.kind != DISCHARGE:
            continue
        problem = _discharge_problem(s, recent, claim, reaches, root, key, require_signed, hashes)
        if problem is None:
            return s, ""
        if not why:
            why = f"the discharge record {s.path.name} no longer stands: {problem}; pv discharge again"
    return None, why or "no discharge record (pv discharge) stands on its live evidence"


def new_status(old: str | None, run: StoredRecord, support_after: Support, claim: Falsifier) -> tuple[str, str | None]:
    """The status after a run (and why it did not move, when it did not).

    A failure falsifies; an error (a broken test, not a failed prediction) moves
    nothing and says which test errored. A pass moves the status to what the evidence now supports
    (a non-live pass never demotes a supported FUNCTIONAL or DISCHARGED, since the
    live record behind it still stands). A skip for a missing fixture blocks a
    PROPOSED falsifier. A pass that reaches nothing (a modified covered file, say)
    moves nothing.
    """
    current = canonical(old)
    record = run.record
    r = reach(run, claim)
    if r.failed:
        return ladder.FALSIFIED, None
    broken = errored(record)
    if broken is not None:
        return current, broken
    if record.outcome == PASSED:
        if r.level is None:
            return current, r.why
        if current == ladder.DISCHARGED and support_after.discharge is not None:
            return current, None
        return support_after.level or current, None
    if record.fixture_absent and current == ladder.PROPOSED:
        return ladder.BLOCKER_FIXTURE_ABSENT, None
    return current, None


def discharge_plan(claim: Falsifier, stored: Sequence[StoredRecord], *, key: bytes | None = None,
                   require_signed: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """What a new discharge would rest on: live records (file sha256) per matrix target, and the
    targets that no record after the latest failure meets."""
    recent, _ = _since_failure(stored)
    reaches = {s.file_sha256: reach(s, claim, key=key, require_signed=require_signed) for s in stored}
    return discharge_backing(recent, claim, reaches)
