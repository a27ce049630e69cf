"""``pv evidence prune``: compact an old evidence store, keeping every record a status rests on.

A repository that runs ``pv falsify`` on every merge gathers thousands of records. Pruning
removes the old ones that no current status needs, per falsifier:

* **what stays** (``needed``): the head of the chain (the next record names it), the
  newest record (``pv status`` shows it), the record backing the status, the latest
  failure (it bounds what counts) and the newest record after it that says why nothing
  reaches further, the latest skip behind a blocker, stale live evidence a status names,
  every discharge record after the latest failure and the live records it rests on,
  format-1 records (they are off the chain) and every prune record (below). Only records
  that finished before the cut-off (``--keep-days`` or ``--before``) go. The status of
  every falsifier is recomputed without them and must come out the same, message for
  message, or nothing is removed.
* **the chain stays verifiable**: a ``kind: prune`` record joins the falsifier's chain
  (signed like any record) and lists each removed record's file name, sha256, git blob id,
  finish time and the ``previous`` it named. The chain check reads those entries as the
  links they were, so a kept record whose ``previous`` names a removed one still follows
  it, through the prune record's word, and a fork or a break is still found.
* **the gate** accepts the deletion of a baseline record only when a prune record added in
  the same change lists it with the baseline's blob id, and the records it lists were not
  needed by the status as it stood before (``pv.report.prune_check``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pv import config, files, repo
from pv.contract import ladder
from pv.contract.model import Contract, Falsifier, load_contracts
from pv.errors import PvError
from pv.falsify import judge, store
from pv.falsify import records as rec
from pv.report.status import judge_falsifier


@dataclass(frozen=True)
class FalsifierPrune:
    """One falsifier's prune: the record files removed (or that would be), how many stay, and
    the prune record written (None on a dry run or when nothing goes)."""

    contract_id: str
    falsifier_id: str
    removed: tuple[str, ...]
    kept: int
    record: str | None = None


@dataclass(frozen=True)
class PruneReport:
    cutoff: str
    dry_run: bool
    falsifiers: tuple[FalsifierPrune, ...]

    @property
    def removed(self) -> int:
        return sum(len(f.removed) for f in self.falsifiers)

    def to_json(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "dry_run": self.dry_run, "removed": self.removed,
                "falsifiers": [{"contract": f.contract_id, "falsifier": f.falsifier_id, "removed": list(f.removed),
                                "kept": f.kept, "record": f.record} for f in self.falsifiers]}


def cutoff(*, keep_days: int | None = None, before: str | None = None, now: datetime | None = None) -> str:
    """The cut-off as a record timestamp: ``keep_days`` before ``now``, or ``before`` (a date,
    ``2026-01-31``, or a UTC time, ``2026-01-31T12:00:00Z``). Exactly one of the two."""
    if (keep_days is None) == (before is None):
        raise PvError("pv evidence prune needs exactly one of --keep-days N and --before DATE")
    if keep_days is not None:
        if keep_days < 0:
            raise PvError(f"--keep-days must be 0 or more, not {keep_days}")
        return rec.iso((now or rec.utc_now()) - timedelta(days=keep_days))
    text = str(before).strip()
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return rec.iso(datetime.strptime(text, form).replace(tzinfo=timezone.utc))
        except ValueError:
            continue
    raise PvError(f"--before {text[:40]!r}: not a date (2026-01-31) or a UTC time (2026-01-31T12:00:00Z)")


def needed(f: Falsifier, stored: Sequence[store.StoredRecord], *, root: Path, key: bytes | None = None,
           settings: config.Settings = config.DEFAULTS) -> dict[str, str]:
    """file sha256 -> why the record stays, for every record the status of ``f`` rests on."""
    keep: dict[str, str] = {}

    def hold(s: store.StoredRecord | None, why: str) -> None:
        if s is not None:
            keep.setdefault(s.file_sha256, why)

    if not stored:
        return keep
    for signed in (False, True) if key is not None else (False,):  # pv gate, and pv gate --require-signed
        sup = judge.support(f, stored, root=root, key=key, require_signed=signed, fresh=settings.stale_blocks)
        hold(sup.backing, "the record backing its status")
        hold(sup.discharge, "the discharge record standing")
        hold(sup.stale_live, "stale live evidence its status names")
        hold(sup.failure, "the latest failure")
        hold(sup.why_record, "the newest record saying why nothing reaches further")
    recent = stored[stored.index(sup.failure) + 1:] if sup.failure is not None else list(stored)
    by_sha = {x.file_sha256: x for x in recent}
    for s in recent:
        if s.record.kind == rec.DISCHARGE:
            hold(s, "a discharge record")
            for sha in (s.record.discharge or {}).get("backing", []):
                hold(by_sha.get(sha), "a live record a discharge rests on")
    if ladder.is_blocker(judge.canonical(f.status)):
        hold(next((s for s in reversed(stored) if s.record.outcome == rec.SKIPPED), None),
             "the latest skip behind its blocker")
    hold(next((s for s in reversed(stored) if s.record.kind != rec.PRUNE), None), "the newest record")
    hold(stored[-1], "the head of the chain")
    for s in stored:
        if s.record.kind == rec.PRUNE:
            hold(s, "a prune record")
        elif s.record.legacy:
            hold(s, "a format-1 record")
    return keep


def removable(f: Falsifier, stored: Sequence[store.StoredRecord], before: str, *, root: Path,
              key: bytes | None = None, settings: config.Settings = config.DEFAULTS) -> list[store.StoredRecord]:
    """The records of ``f`` that finished before ``before`` and that no status rests on, in chain order."""
    keep = needed(f, stored, root=root, key=key, settings=settings)
    return [s for s in stored if s.file_sha256 not in keep and s.record.finished_at < before]


def entry(s: store.StoredRecord) -> dict[str, Any]:
    """What a prune record keeps of a removed record: enough to verify the chain and the gate."""
    return {"name": s.path.name, "sha256": s.file_sha256, "blob": s.git_blob or store.blob_id(s.path.read_bytes()),
            "previous": s.record.previous, "finished_at": s.record.finished_at}


def prune_record(contract: Contract, f: Falsifier, stored: Sequence[store.StoredRecord],
                 gone: Sequence[store.StoredRecord], before: str, *, root: Path,
                 key: bytes | None) -> rec.EvidenceRecord:
    """The sealed ``kind: prune`` record that lists ``gone`` and continues the chain of ``stored``."""
    stamp = rec.iso(rec.utc_now())
    status = judge.canonical(f.status)
    return rec.EvidenceRecord(
        contract_id=contract.id, contract_version=contract.version, falsifier_id=f.id, outcome=rec.PRUNED,
        reason=f"{len(gone)} record(s) finished before {before} that no status rests on", fixture_absent=False,
        tests=(), metrics={}, started_at=stamp, finished_at=stamp, duration_s=0.0, host=rec.default_host(),
        pid=rec.current_pid(), versions=rec.versions(), git={"commit": repo.head_commit(root), "dirty": []},
        subjects={}, claim={"tests": list(f.tests), "live_requirements": dict(f.live_requirements)},
        promotion={"old": status, "new": status, "applied": False, "why": "a prune record moves no status"},
        kind=rec.PRUNE, previous=store.head(stored),
        prune={"before": before, "removed": [entry(s) for s in gone]},
    ).sealed(key)


def _view(contract: Contract, f: Falsifier, stored: list[store.StoredRecord], root: Path, key: bytes | None,
          settings: config.Settings) -> list[tuple[Any, ...]]:
    """What ``pv status`` and ``pv gate`` (with ``--require-signed`` too, given a key) say of ``f``
    on ``stored``, but for its record count."""
    views = []
    for signed in (False, True) if key is not None else (False,):
        s = judge_falsifier(contract, f, stored, [], root, key=key, require_signed=signed, settings=settings)
        views.append((s.status, s.supported, s.unsupported_reason, s.blocked_reason, s.latest, s.backing,
                      s.stale_live, s.problems))
    return views


def _one(contract: Contract, f: Falsifier, evidence_dir: Path, before: str, root: Path, key: bytes | None,
         settings: config.Settings, dry_run: bool) -> FalsifierPrune:
    stored = store.load_stored(evidence_dir, contract.id, f.id)
    gone = removable(f, stored, before, root=root, key=key, settings=settings)
    shown = tuple(_rel(s.path, root) for s in gone)
    if not gone:
        return FalsifierPrune(contract.id, f.id, (), len(stored))
    record = prune_record(contract, f, stored, gone, before, root=root, key=key)
    pending = store.as_stored(record)
    gone_sha = {s.file_sha256 for s in gone}
    after = store.chain_order([s for s in stored if s.file_sha256 not in gone_sha] + [pending])
    was, now = _view(contract, f, stored, root, key, settings), _view(contract, f, after, root, key, settings)
    if was != now:
        raise PvError(f"{contract.id}/{f.id}: pruning {len(gone)} record(s) would change what pv status says "
                      "of it; nothing removed (please report this)")
    if dry_run:
        return FalsifierPrune(contract.id, f.id, shown, len(stored) - len(gone))
    path = store.write_record(evidence_dir, record, root=root)
    for s in gone:
        s.path.unlink()
    return FalsifierPrune(contract.id, f.id, shown, len(stored) - len(gone) + 1, _rel(path, root))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def prune(contracts: Sequence[Contract], *, evidence_dir: Path, root: Path, before: str,
          dry_run: bool = False) -> PruneReport:
    """Prune every falsifier of ``contracts`` (under each contract's lock); see the module docstring."""
    key = rec.key_from_env()
    settings = config.load(root)
    done: list[FalsifierPrune] = []
    for contract in contracts:
        if not contract.falsifiers:
            continue
        store.check_inside(evidence_dir, evidence_dir / store.check_id(contract.id, "contract id"), root)
        with files.contract_locked(evidence_dir, contract.id):
            for f in contract.falsifiers:
                try:
                    done.append(_one(contract, f, evidence_dir, before, root, key, settings, dry_run))
                except rec.EvidenceError as exc:
                    raise PvError(f"{contract.id}/{f.id}: cannot prune: {exc}") from None
    return PruneReport(before, dry_run, tuple(done))


def prune_named(*, contracts_dir: Path | None = None, evidence_dir: Path | None = None,
                keep_days: int | None = None, before: str | None = None, dry_run: bool = False,
                root: Path | None = None) -> PruneReport:
    """``pv evidence prune``: the contracts under ``contracts_dir`` (default ``<repo>/contracts``),
    evidence under ``evidence_dir`` (default ``<repo>/evidence``)."""
    root = root or repo.repo_root()
    limit = cutoff(keep_days=keep_days, before=before)
    folder = (contracts_dir or root / "contracts").resolve()
    if not folder.exists():
        raise PvError(f"{folder}: no such contracts folder (use --contracts)")
    return prune(load_contracts([folder]), evidence_dir=(evidence_dir or root / "evidence").resolve(), root=root,
                 before=limit, dry_run=dry_run)


__all__ = ["FalsifierPrune", "PruneReport", "cutoff", "entry", "needed", "prune", "prune_named", "prune_record",
           "removable"]
