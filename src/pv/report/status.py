"""Where every falsifier stands, and which evidence backs it.

Everything here is recomputed from the contracts and ``evidence/`` on every
call: no cache, no stored verdict, no torch. Support comes from
``pv.falsify.judge`` (measured facts against the *current* claim); integrity
problems of the records themselves (an edited record, a record in another
falsifier's folder, a broken or forked chain, an unreadable file) are listed
per falsifier. ``collect`` returns data; ``pv.report.status_render`` prints it as text,
markdown or JSON (the JSON doubles as a baseline snapshot for ``pv gate``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import config, repo
from pv.contract import ladder
from pv.contract.model import Contract, Falsifier, load_contracts, select
from pv.falsify import judge, store
from pv.falsify import records as rec
from pv.falsify.judge import canonical, stale_phrase

SNAPSHOT_KIND = "pv-status"


@dataclass(frozen=True)
class RecordRef:
    """A pointer to one evidence record, with what a reader needs at a glance."""

    path: str
    outcome: str
    finished_at: str
    #: Recomputed: the record reaches FUNCTIONAL under the current claim.
    live: bool
    stale: tuple[str, ...] = ()
    #: The falsifier names live requirements (otherwise every pass counts as live).
    requirements: bool = True
    #: Why the record reaches no further than it does ("" when it reaches FUNCTIONAL or failed).
    why: str = ""


@dataclass(frozen=True)
class FalsifierStatus:
    id: str
    #: As written in the contract.
    written: str | None
    #: On the ladder (unknown spellings count as PROPOSED).
    status: str
    blocked_reason: str | None
    latest: RecordRef | None
    backing: RecordRef | None
    supported: bool
    unsupported_reason: str
    records: int
    #: Integrity problems of this falsifier's records (each one line).
    problems: tuple[str, ...] = ()
    #: path (relative to the repository) -> sha256 of every record file: the evidence a gate
    #: baseline snapshot keeps.
    evidence: dict[str, str] = field(default_factory=dict)
    #: Why live evidence no longer counts (it is stale), when that is what holds the status
    #: below FUNCTIONAL; "" otherwise.
    stale_live: str = ""

    @property
    def stale(self) -> bool:
        return bool(self.backing and self.backing.stale)

    @property
    def stale_text(self) -> str:
        """What changed since the backing record ran, as a phrase (``a.py and the claim``)."""
        return stale_phrase(self.backing.stale if self.backing else ())

    @property
    def counts_as_functional(self) -> bool:
        """FUNCTIONAL or better, supported and on fresh evidence: what the percentage counts."""
        return ladder.rank(self.status) >= ladder.rank(ladder.FUNCTIONAL) and self.supported and not self.stale


@dataclass(frozen=True)
class ContractStatus:
    id: str
    path: str
    version: str | None
    metadata_status: str | None
    falsifiers: tuple[FalsifierStatus, ...]
    mismatch: str | None
    counts: dict[str, int] = field(default_factory=dict)
    #: The contract's claim view (``pv.contract.claims``): a snapshot baseline compares claims too.
    claim: Mapping[str, Any] = field(default_factory=dict)

    @property
    def functional_share(self) -> float:
        n = len(self.falsifiers)
        good = sum(f.counts_as_functional for f in self.falsifiers)
        return good / n if n else 0.0


@dataclass
class Memo:
    """What one report computes once and reuses: covered files' hashes now, record files read."""

    hashes: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: path of a removed record -> (path of the prune record listing it, its entry there).
    pruned: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusReport:
    contracts: tuple[ContractStatus, ...]
    settings: config.Settings = config.DEFAULTS
    #: path (relative to the repository) -> (sha256, git blob id) of every record file read, as
    #: read: ``pv gate`` compares these with its baseline instead of reading each file again.
    files: Mapping[str, tuple[str, str | None]] = field(default_factory=dict, compare=False, repr=False)
    #: path of a record removed by ``pv evidence prune`` -> (path of the prune record that lists it,
    #: its entry there): what the gate checks a baseline record's deletion against.
    pruned: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.contracts:
            for k, v in c.counts.items():
                out[k] = out.get(k, 0) + v
        return dict(sorted(out.items(), key=lambda kv: -_rank(kv[0])))

    @property
    def total(self) -> int:
        return sum(len(c.falsifiers) for c in self.contracts)

    @property
    def functional_share(self) -> float:
        good = sum(f.counts_as_functional for c in self.contracts for f in c.falsifiers)
        return good / self.total if self.total else 0.0




def _rank(status: str) -> int:
    return ladder.rank(status) if ladder.normalize(status) else -1


def _shown(path: Path, root: Path, *, plain: bool = False) -> str:
    """``path`` relative to the repository, symlinks resolved (each folder resolved once);
    ``plain``: the path is known to be no symlink (``StoredRecord.plain``)."""
    try:
        if plain or not os.path.islink(path):
            folder, _, name = str(path).rpartition(os.sep)
            return f"{_resolved(folder, str(root))}/{name}".lstrip("/")
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


@functools.lru_cache(maxsize=256)
def _resolved(folder: str, root: str) -> str:
    rel = Path(folder).resolve().relative_to(Path(root).resolve()).as_posix()
    return "" if rel == "." else rel


def read_folder(evidence_dir: Path, cid: str, fid: str) -> tuple[list[store.StoredRecord], list[str]]:
    """Every readable record of one falsifier in chain order, and one line per unreadable file."""
    try:
        read = store.read_folder(store.record_dir(evidence_dir, cid, fid))
    except rec.EvidenceError as exc:
        return [], [str(exc)]
    stored = [s for s in read if isinstance(s, store.StoredRecord)]
    problems = [f"unreadable record: {e}" for e in read if isinstance(e, rec.EvidenceError)]
    return store.chain_order(stored), problems


def integrity_problems(stored: Sequence[store.StoredRecord], cid: str, fid: str, root: Path,
                       key: bytes | None) -> list[str]:
    """Edited, misplaced and off-chain records of one falsifier folder. Records a prune record
    lists as removed stand in for themselves (``store.links``): the chain is checked as written."""
    out: list[str] = []
    for s in stored:
        r = s.record
        if r.contract_id != cid or r.falsifier_id != fid:
            out.append(f"misplaced record: {_shown(s.path, root)} is a record of {r.contract_id}/{r.falsifier_id}")
        bad = judge.integrity(s, key)
        if bad:
            out.append(f"tampered record: {_shown(s.path, root)}: {bad}")
    nodes = store.links(stored)
    known = {n[0] for n in nodes} | {s.file_sha256 for s in stored if s.record.legacy}
    starts: list[store.Link] = []
    by_previous: dict[str, list[store.Link]] = {}
    for node in nodes:
        previous = node[1]
        if previous is None:
            starts.append(node)
        elif previous not in known:
            out.append(f"broken chain: {_link(node, root)} follows a record that is not here "
                       f"(sha256 {previous[:12]}...)")
        else:
            by_previous.setdefault(previous, []).append(node)
    first_chained = min((s.record.finished_at for s in stored if not s.record.legacy), default=None)
    for s in stored:
        if s.record.legacy and first_chained is not None and s.record.finished_at > first_chained:
            out.append(f"out-of-order record: {_shown(s.path, root)} is in format 1, which pv no longer "
                       "writes, yet newer than the chain")
    if len(starts) > 1 or (starts and any(x.record.legacy for x in stored)):
        names = ", ".join(_link(n, root) for n in starts)
        out.append(f"broken chain: {names} start(s) a new chain where the record before should be named")
    for children in by_previous.values():
        if len(children) > 1:
            out.append(f"forked chain: {', '.join(_link(c, root) for c in children)} all follow one record")
    return out


def _link(node: store.Link, root: Path) -> str:
    """A chain link as messages name it: the record's path, or the removed record and who lists it."""
    here, lister = node[4], node[5]
    if here is not None:
        return _shown(here.path, root)
    where = _shown(lister.path, root) if lister is not None else "a prune record"
    return f"{node[3]} (removed; listed by {where})"


def falsifier_status(contract: Contract, f: Falsifier, evidence_dir: Path, root: Path, *,
                     key: bytes | None = None, require_signed: bool = False,
                     settings: config.Settings = config.DEFAULTS, memo: Memo | None = None) -> FalsifierStatus:
    """One falsifier's standing, from its folder; ``memo`` is shared across one report (``Memo``)."""
    stored, problems = read_folder(evidence_dir, contract.id, f.id)
    return judge_falsifier(contract, f, stored, problems, root, key=key, require_signed=require_signed,
                           settings=settings, memo=memo)


def judge_falsifier(contract: Contract, f: Falsifier, stored: list[store.StoredRecord], problems: list[str],
                    root: Path, *, key: bytes | None = None, require_signed: bool = False,
                    settings: config.Settings = config.DEFAULTS, memo: Memo | None = None) -> FalsifierStatus:
    """One falsifier's standing on ``stored`` (in chain order) and the read ``problems`` found."""
    memo = Memo() if memo is None else memo
    hashes = memo.hashes
    problems = problems + integrity_problems(stored, contract.id, f.id, root, key)
    canon = canonical(f.status)
    fresh = settings.stale_blocks
    sup = judge.support(f, stored, root=root, key=key, require_signed=require_signed, fresh=fresh,
                        hashes=hashes)
    ok = sup.allows(canon)
    stale_live = _stale_live(f, sup, root, hashes)
    why = "" if ok else f"{canon} but {stale_live}" if stale_live and canon in (
        ladder.FUNCTIONAL, ladder.DISCHARGED) else _unsupported(canon, sup)

    def ref(s: store.StoredRecord) -> RecordRef:
        r = judge.reach(s, f, key=key, require_signed=require_signed)
        return RecordRef(_shown(s.path, root), s.record.outcome, s.record.finished_at,
                         r.level == ladder.FUNCTIONAL,
                         tuple(rec.stale_subjects(s.record, root, f.claim_digest, hashes)),
                         bool(f.live_requirements), r.why)

    back = _backing(canon, stored, sup)
    blocked = None
    if ladder.is_blocker(canon):
        skip = next((s for s in reversed(stored) if s.record.outcome == rec.SKIPPED), None)
        blocked = (skip.record.reason if skip and skip.record.reason else
                   f"{canon} set in the contract without a skipped run on record")
    evidence: dict[str, str] = {}
    for s in stored:
        shown = _shown(s.path, root, plain=s.plain)
        evidence[shown] = s.file_sha256
        memo.files[shown] = (s.file_sha256, s.git_blob)
        if s.record.kind == rec.PRUNE and s.record.prune:
            folder = shown.rpartition("/")[0]
            for entry in s.record.prune.get("removed", ()):
                memo.pruned.setdefault(f"{folder}/{entry.get('name')}", (shown, dict(entry)))
    latest = next((s for s in reversed(stored) if s.record.kind != rec.PRUNE), None)  # a prune says nothing new
    return FalsifierStatus(f.id, f.status, canon, blocked, ref(latest) if latest else None,
                           ref(back) if back is not None else None, ok, why, len(stored),
                           tuple(problems), evidence, stale_live)


def _stale_live(f: Falsifier, sup: judge.Support, root: Path, hashes: dict[str, str | None]) -> str:
    """Why stale live evidence no longer carries the falsifier to FUNCTIONAL ("" when it is not that)."""
    if sup.level == ladder.FUNCTIONAL or sup.stale_live is None:
        return ""
    changed = stale_phrase(rec.stale_subjects(sup.stale_live.record, root, f.claim_digest, hashes))
    reqs = ", ".join(f"{k}={v}" for k, v in f.live_requirements.items())
    where = f" where {reqs} holds" if reqs else ""
    return (f"its live evidence {_shown(sup.stale_live.path, root)} is stale: {changed} changed since it ran; "
            f"rerun pv falsify{where} to restore FUNCTIONAL")


def _unsupported(canon: str, sup: judge.Support) -> str:
    tail = " after the latest failing record" if sup.failed_later else ""
    if sup.failed_later and sup.level is None and canon not in (ladder.FUNCTIONAL, ladder.PARTIAL,
                                                                ladder.DISCHARGED):
        return f"{canon} but the latest counted run failed and nothing passed since: it stands FALSIFIED"
    if canon == ladder.DISCHARGED:
        if sup.level != ladder.FUNCTIONAL:
            return f"DISCHARGED but no passing live record{tail}: {sup.why}"
        return f"DISCHARGED but {sup.discharge_why or 'no discharge record (pv discharge) stands'}"
    if canon == ladder.FUNCTIONAL:
        return f"FUNCTIONAL but no passing live record{tail}: {sup.why}"
    return f"{canon} but no passing record{tail}: {sup.why}"


def _backing(canon: str, stored: Sequence[store.StoredRecord], sup: judge.Support) -> store.StoredRecord | None:
    if canon == ladder.DISCHARGED and sup.discharge is not None:
        return sup.discharge
    if canon in (ladder.FUNCTIONAL, ladder.PARTIAL, ladder.DISCHARGED):
        return sup.backing
    if canon == ladder.FALSIFIED:
        return next((s for s in reversed(stored) if s.record.outcome == rec.FAILED), None)
    if ladder.is_blocker(canon):
        return next((s for s in reversed(stored) if s.record.outcome == rec.SKIPPED), None)
    return None


def _mismatch(meta: str | None, statuses: Sequence[str]) -> str | None:
    """A contract stands where its weakest falsifier stands; say so when metadata disagrees."""
    canon = ladder.normalize(meta) if meta else None
    if canon is None or not statuses:
        return None
    weakest = min(statuses, key=ladder.rank)
    if ladder.rank(canon) == ladder.rank(weakest):
        return None
    direction = "ahead of" if ladder.rank(canon) > ladder.rank(weakest) else "behind"
    return f"metadata.status {canon} is {direction} its falsifiers: the contract stands at {weakest}"


def contract_status(contract: Contract, evidence_dir: Path, root: Path, *, key: bytes | None = None,
                    require_signed: bool = False, settings: config.Settings = config.DEFAULTS,
                    memo: Memo | None = None) -> ContractStatus:
    memo = Memo() if memo is None else memo
    rows = tuple(falsifier_status(contract, f, evidence_dir, root, key=key, require_signed=require_signed,
                                  settings=settings, memo=memo)
                 for f in contract.falsifiers)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ContractStatus(contract.id, _shown(contract.path, root), contract.version, contract.metadata_status,
                          rows, _mismatch(contract.metadata_status, [r.status for r in rows]), counts,
                          dict(contract.claim))


def collect(contracts: Iterable[Contract], evidence_dir: Path, root: Path, *, key: bytes | None = None,
            require_signed: bool = False, settings: config.Settings | None = None) -> StatusReport:
    """Every contract's statuses; ``settings`` default to the repository's (``pv.config.load``)."""
    settings = settings if settings is not None else config.load(root)
    memo = Memo()  # covered files hashed once for the whole report, record files listed
    rows = tuple(contract_status(c, evidence_dir, root, key=key, require_signed=require_signed, settings=settings,
                                 memo=memo)
                 for c in contracts)
    return StatusReport(rows, settings, memo.files, memo.pruned)


def status_of(paths: Iterable[str | os.PathLike[str]] = (), *, contract: str | None = None,
              evidence_dir: Path | None = None, root: Path | None = None) -> StatusReport:
    """``pv status``: the contracts under ``paths`` (default ``<repo>/contracts``), or only the one
    whose id or file stem is ``contract``, against ``evidence_dir`` (default ``<repo>/evidence``)."""
    root = root or repo.repo_root()
    contracts = load_contracts(list(paths) or [root / "contracts"])
    if contract:
        contracts = [select(contracts, contract)]
    return collect(contracts, (evidence_dir or root / "evidence").resolve(), root)
