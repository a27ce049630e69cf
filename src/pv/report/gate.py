"""The CI gate: statuses may only move up, only as far as evidence carries them, on evidence
that nobody edited.

Compared with a baseline (contracts and evidence at a git ref, or a ``pv status
--format json`` snapshot), the gate fails naming each case:

- ``regressed``: a falsifier's status dropped on the ladder;
- ``falsifier-removed`` / ``contract-removed``: it was in the baseline and is gone;
- ``unsupported``: a status higher than the evidence supports, recomputed from the
  records' measured facts against the contract's *current* claim (see
  ``pv.falsify.judge``): a hand edit, or a record that proves less than it says;
  and a contract whose ``metadata.status`` is above its weakest falsifier's (the
  contract stands where that one stands; ``pv falsify`` keeps the two in step);
- ``evidence``: a record edited after it was written (digest or signature), lying in
  another falsifier's folder, off its falsifier's chain, unreadable, or a record of
  the baseline that is now missing or changed (deleting the newest failing record
  is caught here);
- ``binding``: a test marked for a falsifier that its ``test:`` does not name, or a
  named test that no test carries the marker for (read statically, no import);
- ``stale``: the record backing a status *raised in this change* has covered files
  (or a claim) that changed since it ran; with ``--strict``, any stale backing record.

Default baseline: ``git merge-base HEAD main`` (then ``origin/main``, ``master``,
``origin/master``). When that is HEAD itself (running on main), a dirty tree is
compared with HEAD and a clean one with ``HEAD^``, so a push to main is still
checked against the state before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import repo
from pv.contract import ladder
from pv.errors import PvError
from pv.falsify import records as rec
from pv.falsify.binding import check as check_binding
from pv.falsify.binding import scan_markers
from pv.falsify.catalog import Contract, contract_from_text
from pv.falsify.judge import canonical
from pv.files import read_regular
from pv.report.status import SNAPSHOT_KIND, ContractStatus, StatusReport

#: contract id -> falsifier id -> status as written.
Snapshot = Mapping[str, Mapping[str, "str | None"]]

REGRESSED, FALSIFIER_REMOVED, CONTRACT_REMOVED = "regressed", "falsifier-removed", "contract-removed"
UNSUPPORTED, STALE, EVIDENCE, BINDING = "unsupported", "stale", "evidence", "binding"
#: Baseline snapshots are small JSON; anything bigger is refused before parsing.
MAX_SNAPSHOT_BYTES = 16 << 20


@dataclass(frozen=True)
class GateFailure:
    kind: str
    contract: str
    falsifier: str | None
    message: str

    def format(self) -> str:
        where = f"{self.contract}/{self.falsifier}" if self.falsifier else self.contract
        return f"{self.kind}: {where}: {self.message}"


@dataclass(frozen=True)
class Baseline:
    label: str
    snapshot: Snapshot
    notes: tuple[str, ...] = ()
    #: Evidence files of the baseline: path (relative to the repository) -> digest.
    evidence: Mapping[str, str] = field(default_factory=dict)
    #: How ``evidence`` digests are made: ``git-blob`` (a tree) or ``sha256`` (a snapshot).
    evidence_hash: str = "sha256"


def _git(root: Path, *args: str) -> str | None:
    return repo.git_text(root, *args)


def default_ref(root: Path) -> str | None:
    """The baseline commit per the rule in the module docstring; None when HEAD has no parent."""
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if head is None:
        raise PvError(f"{root} is not a git checkout with commits: give --baseline FILE")
    head = head.strip()
    for branch in ("main", "origin/main", "master", "origin/master"):
        if _git(root, "rev-parse", "--verify", "-q", branch) is None:
            continue
        base = _git(root, "merge-base", "HEAD", branch)
        if base is None:
            continue
        base = base.strip()
        if base != head:
            return base
        break
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty and dirty.strip():
        return head
    parent = _git(root, "rev-parse", "--verify", "-q", "HEAD^")
    return parent.strip() if parent else None


def snapshot_of(contracts: Iterable[Contract]) -> dict[str, dict[str, str | None]]:
    return {c.id: {f.id: f.status for f in c.falsifiers} for c in contracts}


def _rel(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        raise PvError(f"{path} is outside the repository {root}") from None


def baseline_from_git(root: Path, ref: str, contract_dirs: Iterable[Path],
                      evidence_dir: Path | None = None) -> Baseline:
    if _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}") is None:
        raise PvError(f"baseline '{ref}' is neither a file nor a git revision")
    rels = [_rel(root, d) for d in contract_dirs]
    listing = _git(root, "ls-tree", "-r", "-z", "--name-only", ref, "--", *rels) or ""
    contracts: list[Contract] = []
    notes: list[str] = []
    for name in filter(None, listing.split("\0")):
        if not name.endswith((".yaml", ".yml")):
            continue
        text = _git(root, "show", f"{ref}:{name}")
        if text is None:
            continue
        try:
            contracts.append(contract_from_text(root / name, text))
        except PvError as exc:
            notes.append(f"baseline {name} at {ref[:12]} unreadable, ignored: {exc}")
    blobs: dict[str, str] = {}
    if evidence_dir is not None:
        blobs = repo.tree_blobs(root, ref, _rel(root, evidence_dir)) or {}
    return Baseline(f"git {ref[:12]}", snapshot_of(contracts), tuple(notes), blobs, "git-blob")


def baseline_from_file(path: Path) -> Baseline:
    """A ``pv status --format json`` snapshot."""
    try:
        data: Any = rec.parse_json(read_regular(path, MAX_SNAPSHOT_BYTES), str(path))
    except (OSError, ValueError) as exc:
        raise PvError(f"{path}: cannot read baseline snapshot: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != SNAPSHOT_KIND or not isinstance(data.get("contracts"), list):
        raise PvError(f"{path}: not a snapshot written by `pv status --format json`")
    snap: dict[str, dict[str, str | None]] = {}
    evidence: dict[str, str] = {}
    try:
        for c in data["contracts"]:
            rows = {}
            for f in c["falsifiers"]:
                written = f.get("written", f.get("status"))
                if written is not None and not isinstance(written, str):
                    raise TypeError(f"status of {f['id']!r} is not a string")
                rows[str(f["id"])] = written
                for p, digest in (f.get("evidence") or {}).items():
                    evidence[str(p)] = str(digest)
            snap[str(c["id"])] = rows
    except (KeyError, TypeError, AttributeError) as exc:
        raise PvError(f"{path}: malformed baseline snapshot ({exc})") from None
    return Baseline(f"snapshot {path}", snap, (), evidence, "sha256")


def _digest_now(root: Path, rel: str, how: str) -> str | None:
    path = root / rel
    try:
        data = read_regular(path, rec.MAX_RECORD_BYTES)
    except (OSError, ValueError):
        return None
    if how == "git-blob":
        return repo.blob_sha1(data)
    return hashlib.sha256(data).hexdigest()


def _owner(rel: str, evidence_rel: str) -> tuple[str, str | None]:
    parts = rel[len(evidence_rel) + 1:].split("/") if rel.startswith(evidence_rel + "/") else rel.split("/")
    return (parts[0], parts[1]) if len(parts) >= 3 else (parts[0], None)


def evidence_changes(baseline: Baseline, root: Path, evidence_dir: Path) -> list[GateFailure]:
    """Baseline records that are gone or whose bytes changed."""
    out: list[GateFailure] = []
    ev_rel = _rel(root, evidence_dir)
    for rel, digest in sorted(baseline.evidence.items()):
        if not rel.endswith(".json") or Path(rel).name.startswith("."):
            continue
        now = _digest_now(root, rel, baseline.evidence_hash)
        if now == digest:
            continue
        cid, fid = _owner(rel, ev_rel)
        what = "removed" if now is None else "changed"
        out.append(GateFailure(EVIDENCE, cid, fid, f"record {rel} of the baseline was {what}; "
                               "evidence is append-only"))
    return out


def binding_failures(contracts: Iterable[Contract], falsifiers_dir: Path, root: Path) -> list[GateFailure]:
    bound = scan_markers(falsifiers_dir, root)
    out: list[GateFailure] = []
    for c in contracts:
        named = {f.id: f.tests for f in c.falsifiers}
        report = check_binding({fid: bound.get(fid, []) for fid in named}, named, list(named), named)
        for fid, node in report.unnamed:
            out.append(GateFailure(BINDING, c.id, fid, f"{node} is marked for it, but its test: does not name it"))
        for fid, node in report.missing:
            out.append(GateFailure(BINDING, c.id, fid, f"its test: names {node}, which no test marked for it has"))
    return out


def _metadata_ahead(c: ContractStatus) -> str | None:
    """Why ``metadata.status`` claims more than the contract's weakest falsifier, or None.

    Behind is only cautious and passes; a word off the ladder (``ACTIVE``) claims no rung.
    """
    claimed = ladder.normalize(c.metadata_status) if c.metadata_status else None
    if claimed is None or not c.falsifiers:
        return None
    weakest = min((f.status for f in c.falsifiers), key=ladder.rank)
    if ladder.rank(claimed) <= ladder.rank(weakest):
        return None
    return (f"metadata.status {claimed} is ahead of its falsifiers: the contract stands at {weakest}; "
            "pv falsify sets it")


def check(report: StatusReport, baseline: Baseline | None, *, strict: bool = False,
          root: Path | None = None, evidence_dir: Path | None = None,
          contracts: Iterable[Contract] = (), falsifiers_dir: Path | None = None) -> list[GateFailure]:
    """Every gate failure of ``report`` (current statuses with evidence) against ``baseline``."""
    failures: list[GateFailure] = []
    now = {c.id: c for c in report.contracts}
    before_all = baseline.snapshot if baseline is not None else {}
    if baseline is not None:
        for cid, before in baseline.snapshot.items():
            contract = now.get(cid)
            if contract is None:
                failures.append(GateFailure(CONTRACT_REMOVED, cid, None,
                                            f"contract with {len(before)} falsifier(s) is gone"))
                continue
            current = {f.id: f for f in contract.falsifiers}
            for fid, old in before.items():
                f = current.get(fid)
                if f is None:
                    failures.append(GateFailure(FALSIFIER_REMOVED, cid, fid, f"was {canonical(old)}, now gone"))
                elif ladder.rank(f.status) < ladder.rank(canonical(old)):
                    failures.append(GateFailure(REGRESSED, cid, fid, f"{canonical(old)} -> {f.status}"))
        if root is not None and evidence_dir is not None:
            failures += evidence_changes(baseline, root, evidence_dir)
    for c in report.contracts:
        ahead = _metadata_ahead(c)
        if ahead:
            failures.append(GateFailure(UNSUPPORTED, c.id, None, ahead))
        for f in c.falsifiers:
            failures += [GateFailure(EVIDENCE, c.id, f.id, p) for p in f.problems]
            if not f.supported:
                failures.append(GateFailure(UNSUPPORTED, c.id, f.id, f.unsupported_reason))
            if f.stale and f.backing is not None and f.supported:
                old = before_all.get(c.id, {}).get(f.id) if baseline is not None else f.written
                raised = baseline is not None and (old is None or ladder.rank(f.status) > ladder.rank(canonical(old)))
                if strict or raised:
                    why = "raised in this change on" if raised else "backed by"
                    failures.append(GateFailure(STALE, c.id, f.id, f"{f.status} {why} {f.backing.path}, but "
                                                f"{', '.join(f.backing.stale)} changed since; rerun pv falsify"))
    if falsifiers_dir is not None and root is not None:
        failures += binding_failures(contracts, falsifiers_dir, root)
    return failures
