"""What the gate compares with: statuses, claims and evidence at an earlier point.

A baseline is a git revision (contracts read with ``git show``, evidence
compared blob by blob with ``git ls-tree``, and the history of every commit
since, so evidence added on a branch cannot quietly disappear again on the same
branch) or a file written by ``pv status --format json`` (statuses, claims and
record hashes; no history).

Default baseline: ``git merge-base HEAD main`` (then ``origin/main``, ``master``,
``origin/master``). When that is HEAD itself (running on main), a dirty tree is
compared with HEAD and a clean one with ``HEAD^``, so a push to main is still
checked against the state before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import repo
from pv.contract.claims import view_problem
from pv.contract.model import Contract, contract_from_text
from pv.errors import PvError
from pv.falsify import records as rec
from pv.files import read_regular
from pv.report.status import SNAPSHOT_KIND

#: contract id -> falsifier id -> status as written.
Snapshot = Mapping[str, Mapping[str, "str | None"]]
#: Baseline snapshots are small JSON; anything bigger is refused before parsing.
MAX_SNAPSHOT_BYTES = 16 << 20
_ZERO = "0" * 40


@dataclass(frozen=True)
class Introduced:
    """An evidence file that a commit since the baseline added or changed."""

    path: str
    blob: str
    commit: str
    subject: str


@dataclass(frozen=True)
class Baseline:
    label: str
    snapshot: Snapshot
    notes: tuple[str, ...] = ()
    #: Evidence files of the baseline: path (relative to the repository) -> digest.
    evidence: Mapping[str, str] = field(default_factory=dict)
    #: How ``evidence`` digests are made: ``git-blob`` (a tree) or ``sha256`` (a snapshot).
    evidence_hash: str = "sha256"
    #: contract id -> its claim view (``pv.contract.claims``); None when the baseline
    #: cannot say (a snapshot written before claims were recorded).
    claims: Mapping[str, Mapping[str, Any]] | None = None
    #: Evidence files committed since the baseline, in commit order (git baselines only).
    history: tuple[Introduced, ...] = ()


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


def rel(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        raise PvError(f"{path} is outside the repository {root}") from None


def history(root: Path, ref: str, evidence_rel: str) -> tuple[Introduced, ...]:
    """Every evidence file added or changed by a commit in ``ref..HEAD``, oldest commit first."""
    out = repo.git(root, "log", "--reverse", "--raw", "-z", "--no-renames", "--no-abbrev",
                   "--format=%x01%H %s", f"{ref}..HEAD", "--", evidence_rel)
    if out is None:
        return ()
    found: list[Introduced] = []
    commit, subject = "", ""
    tokens = out.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    while i < len(tokens):
        token = tokens[i].lstrip("\n")
        i += 1
        if token.startswith("\x01"):
            commit, _, subject = token[1:].partition(" ")
        elif token.startswith(":") and i < len(tokens):
            path = tokens[i]
            i += 1
            parts = token[1:].split()
            if len(parts) >= 5 and parts[3] != _ZERO and parts[4][:1] in "AMT":
                found.append(Introduced(path, parts[3], commit, subject))
    return tuple(found)


def from_git(root: Path, ref: str, contract_dirs: Iterable[Path], evidence_dir: Path | None = None) -> Baseline:
    if _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}") is None:
        raise PvError(f"baseline '{ref}' is neither a file nor a git revision")
    rels = [rel(root, d) for d in contract_dirs]
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
    since: tuple[Introduced, ...] = ()
    if evidence_dir is not None:
        ev_rel = rel(root, evidence_dir)
        blobs = repo.tree_blobs(root, ref, ev_rel) or {}
        since = history(root, ref, ev_rel)
    claims = {c.id: c.claim for c in contracts}
    return Baseline(f"git {ref[:12]}", snapshot_of(contracts), tuple(notes), blobs, "git-blob", claims, since)


def _claims_of(contracts: list[Any]) -> dict[str, Mapping[str, Any]] | None:
    out: dict[str, Mapping[str, Any]] = {}
    for c in contracts:
        claim = c.get("claim")
        if not isinstance(claim, dict):
            return None
        problem = view_problem(claim)
        if problem:
            raise TypeError(f"claim of {str(c['id'])[:40]!r}: {problem}")
        out[str(c["id"])] = claim
    return out


def from_file(path: Path) -> Baseline:
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
            if not isinstance(c.get("id"), str):
                raise TypeError(f"contract id {c.get('id')!r:.40} is not a string")
            rows = {}
            for f in c["falsifiers"]:
                if not isinstance(f.get("id"), str):
                    raise TypeError(f"falsifier id {f.get('id')!r:.40} is not a string")
                written = f.get("written", f.get("status"))
                if written is not None and not isinstance(written, str):
                    raise TypeError(f"status of {f['id']!r} is not a string")
                rows[f["id"]] = written
                for p, digest in (f.get("evidence") or {}).items():
                    evidence[str(p)] = str(digest)
            snap[c["id"]] = rows
        claims = _claims_of(data["contracts"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise PvError(f"{path}: malformed baseline snapshot ({exc})") from None
    notes = () if claims is not None else ((f"{path} records no claims (an older pv wrote it): weakened claims "
                                           "are not checked against it"),)
    return Baseline(f"snapshot {path}", snap, notes, evidence, "sha256", claims)


__all__ = ["Baseline", "Introduced", "Snapshot", "default_ref", "from_file", "from_git", "history", "snapshot_of"]
