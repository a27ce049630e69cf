"""The CI gate: a status may only move up, only as far as evidence carries it, on evidence that
nobody edited, for a claim nobody weakened unseen.

Compared with a baseline (``pv.report.baseline``), the gate fails naming each case:

- ``invalid``: a contract fails ``pv validate`` (errors only): a misspelt claim
  key or a requirement no run can measure would otherwise drop a claim silently;
- ``regressed``: a falsifier's status dropped on the ladder;
- ``weakened``: the contract claims less than the baseline's (``pv.contract.claims``:
  a requirement removed or loosened, a tolerance widened, a prediction or test
  replaced, ...) and no ``claim_changes`` entry acknowledges this exact claim;
- ``falsifier-removed`` / ``contract-removed``: it was in the baseline and is gone
  (a falsifier's removal is acknowledged like any weaker claim);
- ``unsupported``: a status higher than the evidence supports, recomputed from the
  records' measured facts against the contract's *current* claim (``pv.falsify.judge``),
  including a FUNCTIONAL or DISCHARGED status on stale evidence unless the
  repository chose the weaker policy (``pv.config``); and a ``metadata.status``
  above the contract's weakest falsifier;
- ``evidence``: a record edited after it was written, in another falsifier's folder,
  off its chain, unreadable; a record of the baseline now missing or changed; or a
  record committed *since* the baseline (on this branch) that is gone or changed
  now: evidence is append-only across every commit, so a branch cannot erase its
  own failures;
- ``binding``: a test marked for a falsifier that its ``test:`` does not name, a
  named test no marked test has, or a marker naming an id no contract defines;
- ``stale``: the record backing a status *raised in this change* has covered files
  (or a claim) that changed since it ran; with ``--strict``, any stale backing record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pv import config, repo
from pv.contract import claims, ladder
from pv.contract.model import Contract, load_contracts
from pv.errors import PvError
from pv.falsify import records as rec
from pv.falsify.binding import check as check_binding
from pv.falsify.binding import scan_markers
from pv.falsify.judge import canonical
from pv.files import read_regular
from pv.report import baseline as baselines
from pv.report.baseline import Baseline, rel
from pv.report.status import ContractStatus, StatusReport, collect

REGRESSED, FALSIFIER_REMOVED, CONTRACT_REMOVED = "regressed", "falsifier-removed", "contract-removed"
UNSUPPORTED, STALE, EVIDENCE, BINDING = "unsupported", "stale", "evidence", "binding"
WEAKENED, INVALID = "weakened", "invalid"
KINDS = (INVALID, REGRESSED, WEAKENED, FALSIFIER_REMOVED, CONTRACT_REMOVED, UNSUPPORTED, EVIDENCE, BINDING,
         STALE)


@dataclass(frozen=True)
class GateFailure:
    kind: str
    contract: str
    falsifier: str | None
    message: str

    def format(self) -> str:
        where = "/".join(p for p in (self.contract, self.falsifier) if p)
        return f"{self.kind}: {where}: {self.message}"


def _digest_now(root: Path, rel_path: str, how: str,
                known: Mapping[str, tuple[str, str | None]] | None = None) -> str | None:
    """The file's digest now (``how``: ``git-blob`` or ``sha256``); ``known`` holds those of the
    record files the status report read moments ago (path -> (sha256, blob)), reused."""
    seen = known.get(rel_path) if known is not None else None
    if seen is not None:
        digest = seen[1] if how == "git-blob" else seen[0]
        if digest is not None:
            return digest
    try:
        data = read_regular(root / rel_path, rec.MAX_RECORD_BYTES)
    except (OSError, ValueError):
        return None
    if how == "git-blob":
        return repo.blob_sha1(data)
    return hashlib.sha256(data).hexdigest()


def _owner(rel_path: str, evidence_rel: str) -> tuple[str, str | None]:
    inside = rel_path.startswith(evidence_rel + "/")
    parts = rel_path[len(evidence_rel) + 1:].split("/") if inside else rel_path.split("/")
    return (parts[0], parts[1]) if len(parts) >= 3 else (parts[0], None)


def _is_record(rel_path: str) -> bool:
    return rel_path.endswith(".json") and not Path(rel_path).name.startswith(".")


def evidence_changes(baseline: Baseline, root: Path, evidence_dir: Path,
                     known: Mapping[str, tuple[str, str | None]] | None = None, *,
                     pruned: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
                     contracts: Sequence[Contract] = (), settings: config.Settings = config.DEFAULTS,
                     key: bytes | None = None) -> list[GateFailure]:
    """Records of the baseline, or committed since it, that are gone or whose bytes changed
    (``known``: the record files already read, as ``StatusReport.files``). A record gone with
    a prune record of this change listing it (``pruned``, as ``StatusReport.pruned``) is checked
    by ``pv.report.prune_check`` instead: listed truly, and resting no status of ``contracts``."""
    from pv.report import prune_check

    out: list[GateFailure] = []
    removals: list[prune_check.Removal] = []
    ev_rel = rel(root, evidence_dir)
    for path, digest in sorted(baseline.evidence.items()):
        if not _is_record(path):
            continue
        now = _digest_now(root, path, baseline.evidence_hash, known)
        if now == digest:
            continue
        cid, fid = _owner(path, ev_rel)
        hit = prune_check.listed(path, digest, baseline.evidence_hash, pruned or {}, baseline.evidence) \
            if now is None else None
        if hit is not None:
            blob = digest if baseline.evidence_hash == "git-blob" else None
            removals.append(prune_check.Removal(path, blob, hit[0], hit[1], (cid, fid)))
            continue
        what = "removed" if now is None else "changed"
        out.append(GateFailure(EVIDENCE, cid, fid, f"record {path} of the baseline was {what}; "
                               "evidence is append-only (restore it from the baseline)"))
    reported: set[str] = set()
    for intro in baseline.history:
        if intro.path in baseline.evidence or intro.path in reported or not _is_record(intro.path):
            continue
        now = _digest_now(root, intro.path, "git-blob", known)
        if now == intro.blob:
            continue
        reported.add(intro.path)
        cid, fid = _owner(intro.path, ev_rel)
        hit = prune_check.listed(intro.path, intro.blob, "git-blob", pruned or {}, baseline.evidence) \
            if now is None else None
        if hit is not None:
            removals.append(prune_check.Removal(intro.path, intro.blob, hit[0], hit[1], (cid, fid)))
            continue
        what = "removed" if now is None else "changed"
        out.append(GateFailure(EVIDENCE, cid, fid, (
            f"record {intro.path}, committed in {intro.commit[:12]} ({intro.subject[:60]}), was {what} since; "
            f"evidence is append-only on a branch too (git checkout {intro.commit[:12]} -- {intro.path} "
            "restores it)")))
    if removals:
        found = prune_check.backing_problems(removals, root=root, evidence_dir=evidence_dir, contracts=contracts,
                                             settings=settings, key=key)
        out += [GateFailure(EVIDENCE, cid, fid, message) for cid, fid, message in found]
    return out


def binding_failures(contracts: Sequence[Contract], falsifiers_dir: Path, root: Path) -> list[GateFailure]:
    bound = scan_markers(falsifiers_dir, root)
    out: list[GateFailure] = []
    known = {f.id for c in contracts for f in c.falsifiers}
    for fid, nodes in sorted(check_binding(bound, known).orphans.items()):
        from pv.contract.rulebase import close_match

        guess = close_match(fid, frozenset(known), 0.8)
        hint = f" (did you mean {guess}?)" if guess else ""
        out.append(GateFailure(BINDING, "", fid, (
            f"{', '.join(nodes)} is marked for {fid}, which no contract defines{hint}; pv falsify refuses "
            "every contract while it is there: fix the marker or add the falsifier")))
    for c in contracts:
        named = {f.id: f.tests for f in c.falsifiers}
        report = check_binding({fid: bound.get(fid, []) for fid in named}, named, list(named), named)
        for fid, node in report.unnamed:
            out.append(GateFailure(BINDING, c.id, fid, f"{node} is marked for it, but its test: does not name it"))
        for fid, node in report.missing:
            out.append(GateFailure(BINDING, c.id, fid, f"its test: names {node}, which no test marked for it has"))
    return out


def invalid_contracts(contracts: Sequence[Contract], root: Path | None = None) -> list[GateFailure]:
    """Contracts that fail ``pv validate``: the gate judges only claims it can read as written."""
    from pv.contract.validate import validate_files

    if not contracts:
        return []
    by_file = {str(c.path): c.id for c in contracts}
    report = validate_files([c.path for c in contracts], jobs=1)
    out: list[GateFailure] = []
    for f in report.findings:
        if f.is_error:
            cid = by_file.get(f.file, f.display_file)
            shown = _shown(Path(f.file), root) if root is not None else f.display_file
            out.append(GateFailure(INVALID, cid, None, (
                f"{shown}:{f.line}:{f.column}: {f.rule} {f.message}; the gate judges only valid "
                "contracts (pv validate)")))
    return out


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def _acknowledge_hint(c: Contract) -> str:
    again = (" (its claim_changes acknowledge another version of the claim: acknowledge again after the last "
             "edit)") if c.acknowledgements else ""
    return (f"a weaker claim needs a reviewed acknowledgement: pv acknowledge --contract {c.id} --by WHO "
            f"--reason WHY, then commit; or restore the claim{again}")


def claim_failures(baseline: Baseline, contracts: Sequence[Contract]) -> tuple[list[GateFailure], list[str]]:
    """Weaker claims than the baseline's (and removed falsifiers), unless acknowledged; plus notes."""
    out: list[GateFailure] = []
    notes: list[str] = []
    now = {c.id: c for c in contracts}
    for cid, old in (baseline.claims or {}).items():
        c = now.get(cid)
        if c is None:
            continue  # contract-removed, from the snapshot
        found = claims.weakenings(old, c.claim)
        if not found:
            continue
        ack = next((a for a in c.acknowledgements if a.claim == c.claim_digest), None)
        if ack is not None:
            shown = "; ".join(w.format() for w in found)
            notes.append(f"{cid}: weaker claim acknowledged by {ack.by} ({ack.reason}): {shown}")
            continue
        hint = _acknowledge_hint(c)
        was = baseline.snapshot.get(cid, {})
        for w in found:
            if w.removed_falsifier:
                out.append(GateFailure(FALSIFIER_REMOVED, cid, w.where,
                                       f"was {canonical(was.get(w.where))}, now gone; {hint}"))
            elif w.where in old.get("falsifiers", {}):
                out.append(GateFailure(WEAKENED, cid, w.where, f"{w.what}; {hint}"))
            else:
                out.append(GateFailure(WEAKENED, cid, None, f"{w.format()}; {hint}"))
    return out, notes


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


def status_failures(report: StatusReport, baseline: Baseline | None, *, strict: bool,
                    check_removed: bool) -> list[GateFailure]:
    """Regressions and removals against the baseline's statuses; unsupported and stale statuses."""
    failures: list[GateFailure] = []
    now = {c.id: c for c in report.contracts}
    before_all = baseline.snapshot if baseline is not None else {}
    for cid, before in before_all.items():
        contract = now.get(cid)
        if contract is None:
            failures.append(GateFailure(CONTRACT_REMOVED, cid, None,
                                        f"contract with {len(before)} falsifier(s) is gone"))
            continue
        current = {f.id: f for f in contract.falsifiers}
        for fid, old in before.items():
            f = current.get(fid)
            if f is None:
                if check_removed:
                    failures.append(GateFailure(FALSIFIER_REMOVED, cid, fid, f"was {canonical(old)}, now gone"))
            elif ladder.rank(f.status) < ladder.rank(canonical(old)):
                why = f" ({f.stale_live})" if f.stale_live else ""
                failures.append(GateFailure(REGRESSED, cid, fid, f"{canonical(old)} -> {f.status}{why}"))
    for c in report.contracts:
        ahead = _metadata_ahead(c)
        if ahead:
            failures.append(GateFailure(UNSUPPORTED, c.id, None, ahead))
        for f in c.falsifiers:
            failures += [GateFailure(EVIDENCE, c.id, f.id, p) for p in f.problems]
            if not f.supported:
                failures.append(GateFailure(UNSUPPORTED, c.id, f.id, f.unsupported_reason))
            elif f.stale and f.backing is not None and ladder.rank(f.status) >= ladder.rank(ladder.PARTIAL):
                old = before_all.get(c.id, {}).get(f.id) if baseline is not None else f.written
                raised = baseline is not None and (old is None or ladder.rank(f.status) > ladder.rank(canonical(old)))
                if strict or raised:
                    why = "raised in this change on" if raised else "rests on"
                    failures.append(GateFailure(STALE, c.id, f.id, (
                        f"{f.status} {why} {f.backing.path}, but {f.stale_text} changed since it ran; "
                        "rerun pv falsify")))
    return failures


def check(report: StatusReport, baseline: Baseline | None, *, strict: bool = False,
          root: Path | None = None, evidence_dir: Path | None = None,
          contracts: Iterable[Contract] = (), falsifiers_dir: Path | None = None,
          validate: bool = True, key: bytes | None = None) -> tuple[list[GateFailure], list[str]]:
    """Every gate failure of ``report`` (current statuses with evidence) against ``baseline``,
    and notes (acknowledged weaker claims) for the reader."""
    contracts = list(contracts)
    failures: list[GateFailure] = invalid_contracts(contracts, root) if validate else []
    notes: list[str] = []
    claim_checked = baseline is not None and baseline.claims is not None
    if baseline is not None and claim_checked:
        weaker, notes = claim_failures(baseline, contracts)
        failures += weaker
    failures += status_failures(report, baseline, strict=strict, check_removed=not claim_checked)
    if baseline is not None and root is not None and evidence_dir is not None:
        failures += evidence_changes(baseline, root, evidence_dir, report.files, pruned=report.pruned,
                                     contracts=contracts, settings=report.settings, key=key)
    if falsifiers_dir is not None and root is not None:
        failures += binding_failures(contracts, falsifiers_dir, root)
    order = {k: i for i, k in enumerate(KINDS)}
    failures.sort(key=lambda f: order.get(f.kind, len(order)))
    return failures, notes


@dataclass(frozen=True)
class GateResult:
    """What ``pv gate`` decides: the failures (empty: it passes), what was compared, and notes."""

    failures: tuple[GateFailure, ...]
    notes: tuple[str, ...]
    baseline: str
    strict: bool
    require_signed: bool
    report: StatusReport
    contracts: tuple[Contract, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, object]:
        return {"baseline": self.baseline, "strict": self.strict, "require_signed": self.require_signed,
                "ok": self.ok, "notes": list(self.notes), "failures": [asdict(f) for f in self.failures]}


def run(paths: Sequence[Path] = (), *, baseline: str | None = None, strict: bool = False,
        require_signed: bool = False, evidence_dir: Path | None = None, falsifiers_dir: Path | None = None,
        root: Path | None = None, key: bytes | None = None) -> GateResult:
    """The whole gate, as ``pv gate`` and ``pv.gate()`` run it: contracts under ``paths`` (default
    ``<root>/contracts``), evidence verified with ``key`` (default: ``PV_EVIDENCE_KEY``), compared
    with ``baseline`` (a git revision or a ``pv status --format json`` file; default per
    ``pv.report.baseline.default_ref``)."""
    root = root or repo.repo_root()
    key = key if key is not None else rec.key_from_env()
    if require_signed and key is None:
        raise PvError(f"--require-signed needs the signing key in {rec.KEY_ENV} to verify signatures")
    settings = config.load(root)
    dirs = list(paths) or [root / "contracts"]
    contracts = load_contracts(dirs)
    evidence = (evidence_dir or root / "evidence").resolve()
    report = collect(contracts, evidence, root, key=key, require_signed=require_signed, settings=settings)
    if baseline is not None and Path(baseline).is_file():
        base: Baseline | None = baselines.from_file(Path(baseline))
    else:
        ref = baseline if baseline is not None else baselines.default_ref(root)
        base = baselines.from_git(root, ref, dirs, evidence) if ref is not None else None
    tests = (falsifiers_dir or root / "falsifiers").resolve()
    if falsifiers_dir is not None and not tests.is_dir():
        raise PvError(f"{falsifiers_dir}: no such falsifier folder")
    failures, notes = check(report, base, strict=strict, root=root, evidence_dir=evidence, contracts=contracts,
                            falsifiers_dir=tests if tests.is_dir() else None, key=key)
    notes = [*(base.notes if base else ()), *notes]
    if not settings.stale_blocks:
        notes.insert(0, settings.describe())
    label = base.label if base is not None else "none (no earlier commit)"
    return GateResult(tuple(failures), tuple(notes), label, strict, require_signed, report, tuple(contracts))


__all__ = [
    "KINDS",
    "GateFailure",
    "GateResult",
    "binding_failures",
    "check",
    "claim_failures",
    "evidence_changes",
    "invalid_contracts",
    "run",
    "status_failures",
]
