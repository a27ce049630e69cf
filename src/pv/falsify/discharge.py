"""``pv discharge``: close a falsifier beyond FUNCTIONAL, on a record nobody can write by hand.

DISCHARGED means more than FUNCTIONAL. A falsifier is discharged only when

1. its evidence reaches FUNCTIONAL (a live pass after the latest failure, judged from
   measured facts against the current claim);
2. a live pass meets every target of the contract's ``discharge.matrix`` (each target is
   merged onto ``live_requirements``: e.g. CUDA in float32 *and* in bfloat16); without
   a matrix the live requirements are the one target;
3. the covered files, the claim and every artifact (``discharge.artifacts`` in the
   contract, plus ``--artifact`` here: a proof, a review) are committed and unchanged
   since the live records ran;
4. a person says who and why (``--by``, ``--reason``).

Then a discharge record joins the falsifier's chain (hashes of the artifacts and of the
live records it rests on, signed like any record when ``PV_EVIDENCE_KEY`` is set) and the
status becomes DISCHARGED. ``pv gate`` re-checks all of it: a later failure, a changed
covered file or artifact, or a hand-written DISCHARGED without such a record fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files, repo
from pv.contract import ladder
from pv.contract.model import Contract, load_contract, load_contracts, select
from pv.errors import PvError
from pv.falsify import judge, store
from pv.falsify import records as rec
from pv.falsify.rewrite import rewrite_statuses
from pv.falsify.run import dirty_paths, standing


@dataclass(frozen=True)
class DischargeResult:
    """The discharge record written (``path``), the live records it rests on (file sha256s), the
    artifacts' hashes, and ``metadata.status`` when it moved with the falsifier."""

    path: Path
    backing: tuple[str, ...]
    artifacts: dict[str, str | None]
    metadata_status: str | None
    contract_id: str = ""
    falsifier_id: str = ""
    by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"contract": self.contract_id, "falsifier": self.falsifier_id, "by": self.by,
                "record": str(self.path), "backing": list(self.backing), "artifacts": dict(self.artifacts),
                "metadata_status": self.metadata_status}


def discharge_named(falsifier_id: str, *, contract: str, by: str, reason: str, artifacts: tuple[str, ...] = (),
                    contracts_dir: Path | None = None, evidence_dir: Path | None = None,
                    root: Path | None = None) -> DischargeResult:
    """``pv discharge``: ``contract`` is an id or a file stem under ``contracts_dir`` (default
    ``<repo>/contracts``); evidence goes to ``evidence_dir`` (default ``<repo>/evidence``)."""
    root = root or repo.repo_root()
    contracts_path = (contracts_dir or root / "contracts").resolve()
    if not contracts_path.exists():
        raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
    chosen = select(load_contracts([contracts_path]), contract)
    return discharge(chosen, falsifier_id, by=by, reason=reason, root=root,
                     evidence_dir=(evidence_dir or root / "evidence").resolve(), artifacts=artifacts)


def discharge(contract: Contract, falsifier_id: str, *, by: str, reason: str, root: Path,
              evidence_dir: Path, artifacts: tuple[str, ...] = ()) -> DischargeResult:
    """Check every condition, then write the discharge record and the status. PvError otherwise."""
    if not by.strip() or not reason.strip():
        raise PvError("pv discharge needs --by (who) and --reason (why), both non-empty")
    f = contract.falsifier(falsifier_id)
    if f is None:
        known = ", ".join(x.id for x in contract.falsifiers) or "none"
        raise PvError(f"contract {contract.id} has no falsifier {falsifier_id} (known: {known})")
    store.check_id(contract.id, "contract id")
    store.check_id(f.id, "falsifier id")
    store.check_inside(evidence_dir, evidence_dir / contract.id, root)
    names = tuple(dict.fromkeys((*f.discharge_artifacts, *artifacts)))
    hashed = rec.hash_files(root, names)
    absent = [n for n, d in hashed.items() if d is None]
    if absent:
        raise PvError(f"artifact(s) not found as regular files in the repository: {', '.join(absent)}")
    dirty = (dirty_paths(root, contract, f) or []) + (repo.modified(root, list(names)) or [])
    if dirty:
        raise PvError(f"{f.id}: commit first; these differ from HEAD: {', '.join(sorted(set(dirty)))}")
    key = rec.key_from_env()
    with files.contract_locked(evidence_dir, contract.id):
        return _write(contract, f.id, by, reason, root, evidence_dir, hashed, key)


def _write(contract: Contract, fid: str, by: str, reason: str, root: Path, evidence_dir: Path,
           artifacts: dict[str, str | None], key: bytes | None) -> DischargeResult:
    now = load_contract(contract.path)
    f = now.falsifier(fid)
    if f is None:
        raise PvError(f"{fid} vanished from {contract.path} while waiting for its lock")
    current = judge.canonical(f.status)
    if current == ladder.DISCHARGED:
        raise PvError(f"{fid} is already DISCHARGED")
    stored = store.load_stored(evidence_dir, now.id, fid)
    sup = judge.support(f, stored, root=root, key=key)
    if sup.level != ladder.FUNCTIONAL:
        raise PvError(f"{fid}: no live pass after the latest failure backs a discharge ({sup.why}); "
                      "run pv falsify on the real target first")
    backing, missing = judge.discharge_plan(f, stored, key=key)
    if missing:
        targets = "; ".join(", ".join(f"{k}={v}" for k, v in t.items()) for t in missing)
        raise PvError(f"{fid}: no live pass meets these discharge targets: {targets}")
    by_sha = {s.file_sha256: s for s in stored}
    stale = {name for sha in backing for name in rec.stale_subjects(by_sha[sha].record, root, f.claim_digest)}
    if stale:
        raise PvError(f"{fid}: {', '.join(sorted(stale))} changed since the live records ran; rerun pv falsify")
    stamp = rec.iso(rec.utc_now())
    subjects: dict[str, str | None] = dict(rec.hash_files(root, f.covered_files))
    subjects.update(artifacts)
    subjects[rec.claim_subject(now.id, fid)] = f.claim_digest
    record = rec.EvidenceRecord(
        contract_id=now.id, contract_version=now.version, falsifier_id=fid, outcome=rec.DISCHARGED,
        reason=reason.strip(), fixture_absent=False, tests=(), metrics={}, started_at=stamp,
        finished_at=stamp, duration_s=0.0, host=rec.default_host(), pid=rec.current_pid(),
        versions=rec.versions(), git={"commit": repo.head_commit(root), "dirty": []}, subjects=subjects,
        claim={"tests": list(f.tests), "live_requirements": dict(f.live_requirements),
               **({"discharge_matrix": [dict(t) for t in f.discharge_matrix]} if f.discharge_matrix else {})},
        promotion={"old": current, "new": ladder.DISCHARGED, "applied": True, "why": None},
        kind=rec.DISCHARGE, previous=store.head(stored),
        discharge={"by": by.strip(), "reason": reason.strip(),
                   "artifacts": {k: v for k, v in artifacts.items() if v is not None}, "backing": backing},
    ).sealed(key)
    path = store.write_record(evidence_dir, record, root=root)
    meta = standing(now, {fid: ladder.DISCHARGED})
    rewrite_statuses(now.path, {fid: ladder.DISCHARGED}, metadata_status=meta)
    return DischargeResult(path, tuple(backing), artifacts, meta, now.id, fid, by.strip())
