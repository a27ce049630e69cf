"""The CI gate: statuses may only move up, and only as far as evidence carries them.

Compared with a baseline (contracts at a git ref, or a ``pv status --format
json`` snapshot), the gate fails naming each case:

- ``regressed``: a falsifier's status dropped on the ladder;
- ``falsifier-removed`` / ``contract-removed``: it was in the baseline and is gone;
- ``unsupported``: a status higher than the evidence supports (FUNCTIONAL or
  DISCHARGED without a passing live record, PARTIAL_ALGORITHM_LEVEL without a
  passing record, in both cases newer than the latest failing one): a hand edit;
- ``stale`` (``--strict`` only): a file hashed by the backing record changed since.

Default baseline: ``git merge-base HEAD main`` (then ``origin/main``, ``master``,
``origin/master``). When that is HEAD itself (running on main), a dirty tree is
compared with HEAD and a clean one with ``HEAD^``, so a push to main is still
checked against the state before it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.contract import ladder
from pv.errors import PvError
from pv.falsify.catalog import Contract, contract_from_text
from pv.falsify.promote import canonical
from pv.report.status import SNAPSHOT_KIND, StatusReport

#: contract id -> falsifier id -> status as written.
Snapshot = Mapping[str, Mapping[str, "str | None"]]

REGRESSED, FALSIFIER_REMOVED, CONTRACT_REMOVED = "regressed", "falsifier-removed", "contract-removed"
UNSUPPORTED, STALE = "unsupported", "stale"


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


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


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


def baseline_from_git(root: Path, ref: str, contract_dirs: Iterable[Path]) -> Baseline:
    if _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}") is None:
        raise PvError(f"baseline '{ref}' is neither a file nor a git revision")
    rels = []
    for d in contract_dirs:
        try:
            rels.append(str(d.resolve().relative_to(root)) or ".")
        except ValueError:
            raise PvError(f"{d} is outside the repository {root}") from None
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
    return Baseline(f"git {ref[:12]}", snapshot_of(contracts), tuple(notes))


def baseline_from_file(path: Path) -> Baseline:
    """A ``pv status --format json`` snapshot."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PvError(f"{path}: cannot read baseline snapshot: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != SNAPSHOT_KIND or not isinstance(data.get("contracts"), list):
        raise PvError(f"{path}: not a snapshot written by `pv status --format json`")
    snap: dict[str, dict[str, str | None]] = {}
    try:
        for c in data["contracts"]:
            snap[str(c["id"])] = {str(f["id"]): f.get("written", f.get("status")) for f in c["falsifiers"]}
    except (KeyError, TypeError) as exc:
        raise PvError(f"{path}: malformed baseline snapshot ({exc})") from None
    return Baseline(f"snapshot {path}", snap)


def check(report: StatusReport, baseline: Baseline | None, *, strict: bool = False) -> list[GateFailure]:
    """Every gate failure of ``report`` (current statuses with evidence) against ``baseline``."""
    failures: list[GateFailure] = []
    now = {c.id: c for c in report.contracts}
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
    for c in report.contracts:
        for f in c.falsifiers:
            if not f.supported:
                failures.append(GateFailure(UNSUPPORTED, c.id, f.id, f.unsupported_reason))
            if strict and f.stale and f.backing is not None:
                failures.append(GateFailure(STALE, c.id, f.id, f"{', '.join(f.backing.stale)} changed "
                                            f"since {f.backing.path}; rerun pv falsify"))
    return failures
