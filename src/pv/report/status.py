"""Where every falsifier stands, and which evidence backs it.

Everything here is recomputed from the contracts and ``evidence/``: no cache,
no torch. ``collect`` returns data; ``render_text``/``render_markdown``/
``to_json`` print it (the JSON doubles as a baseline snapshot for ``pv gate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pv.contract import ladder
from pv.falsify import evidence as ev
from pv.falsify.catalog import Contract
from pv.falsify.promote import backing, canonical, supports

SNAPSHOT_KIND = "pv-status"


@dataclass(frozen=True)
class RecordRef:
    """A pointer to one evidence record, with what a reader needs at a glance."""

    path: str
    outcome: str
    finished_at: str
    live: bool
    stale: tuple[str, ...] = ()
    #: The falsifier named live requirements (otherwise every pass counts as live).
    requirements: bool = True

    @classmethod
    def of(cls, record: ev.EvidenceRecord, path: Path, root: Path) -> RecordRef:
        try:
            shown = str(path.relative_to(root))
        except ValueError:
            shown = str(path)
        return cls(shown, record.outcome, record.finished_at, record.live,
                   tuple(ev.stale_files(record, root)), bool(record.live_requirements))


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

    @property
    def stale(self) -> bool:
        return bool(self.backing and self.backing.stale)


@dataclass(frozen=True)
class ContractStatus:
    id: str
    path: str
    version: str | None
    metadata_status: str | None
    falsifiers: tuple[FalsifierStatus, ...]
    mismatch: str | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def functional_share(self) -> float:
        n = len(self.falsifiers)
        good = sum(ladder.rank(f.status) >= ladder.rank(ladder.FUNCTIONAL) for f in self.falsifiers)
        return good / n if n else 0.0


@dataclass(frozen=True)
class StatusReport:
    contracts: tuple[ContractStatus, ...]

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
        good = sum(ladder.rank(f.status) >= ladder.rank(ladder.FUNCTIONAL)
                   for c in self.contracts for f in c.falsifiers)
        return good / self.total if self.total else 0.0


def _rank(status: str) -> int:
    return ladder.rank(status) if ladder.normalize(status) else -1


def _record_paths(evidence_dir: Path, cid: str, fid: str) -> list[tuple[ev.EvidenceRecord, Path]]:
    pairs = [(ev.read_record(p), p) for p in ev.iter_record_paths(evidence_dir, cid, fid)]
    pairs.sort(key=lambda rp: (rp[0].finished_at, rp[1].name))
    return pairs


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


def falsifier_status(contract: Contract, fid: str, written: str | None, evidence_dir: Path,
                     root: Path) -> FalsifierStatus:
    pairs = _record_paths(evidence_dir, contract.id, fid)
    records = [r for r, _ in pairs]
    canon = canonical(written)
    ok, why = supports(canon, records)
    back = backing(canon, records)
    back_ref = next((RecordRef.of(r, p, root) for r, p in pairs if r is back), None)
    latest = RecordRef.of(*pairs[-1], root) if pairs else None
    blocked = None
    if ladder.is_blocker(canon):
        skip = back if back is not None and back.outcome == ev.SKIPPED else None
        blocked = (skip.reason if skip and skip.reason else
                   f"{canon} set in the contract without a skipped run on record")
    return FalsifierStatus(fid, written, canon, blocked, latest, back_ref, ok, why, len(records))


def contract_status(contract: Contract, evidence_dir: Path, root: Path) -> ContractStatus:
    rows = tuple(falsifier_status(contract, f.id, f.status, evidence_dir, root) for f in contract.falsifiers)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    try:
        shown = str(contract.path.resolve().relative_to(root))
    except ValueError:
        shown = str(contract.path)
    return ContractStatus(contract.id, shown, contract.version, contract.metadata_status, rows,
                          _mismatch(contract.metadata_status, [r.status for r in rows]), counts)


def collect(contracts: Iterable[Contract], evidence_dir: Path, root: Path) -> StatusReport:
    return StatusReport(tuple(contract_status(c, evidence_dir, root) for c in contracts))


# --------------------------------------------------------------------------- rendering


def to_dict(report: StatusReport) -> dict[str, Any]:
    def contract(c: ContractStatus) -> dict[str, Any]:
        return {"id": c.id, "path": c.path, "version": c.version, "metadata_status": c.metadata_status,
                "mismatch": c.mismatch, "counts": c.counts, "functional_share": round(c.functional_share, 4),
                "falsifiers": [{**asdict(f), "stale": f.stale} for f in c.falsifiers]}
    return {"kind": SNAPSHOT_KIND, "version": 1, "contracts": [contract(c) for c in report.contracts],
            "total": {"falsifiers": report.total, "counts": report.counts,
                      "functional_share": round(report.functional_share, 4)}}


def to_json(report: StatusReport) -> str:
    return json.dumps(to_dict(report), indent=2)


def _evidence_text(f: FalsifierStatus) -> str:
    if f.latest is None:
        return "no evidence"
    live = ("live" if f.latest.live else "not live") if f.latest.requirements else "no live requirements"
    text = f"latest {f.latest.outcome} {f.latest.finished_at[:19]}Z ({live})"
    if f.backing is not None and f.backing.path != f.latest.path:
        text += f"; backed by {f.backing.outcome} {f.backing.finished_at[:19]}Z"
    return text


def _notes(f: FalsifierStatus) -> list[str]:
    notes = []
    if f.blocked_reason:
        notes.append(f"blocked: {f.blocked_reason}")
    if not f.supported:
        notes.append(f"unsupported: {f.unsupported_reason}")
    if f.stale and f.backing is not None:
        notes.append(f"stale: {', '.join(f.backing.stale)} changed since {f.backing.path}")
    return notes


def _summary(counts: dict[str, int], total: int, share: float) -> str:
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{total} falsifiers: {parts or 'none'}; FUNCTIONAL or better: {share:.0%}"


def render_text(report: StatusReport) -> str:
    lines: list[str] = []
    for c in report.contracts:
        meta = f", metadata.status {c.metadata_status}" if c.metadata_status else ""
        lines.append(f"{c.id} (v{c.version or '?'}{meta}) {c.path}")
        width = max((len(f.id) for f in c.falsifiers), default=0)
        swidth = max((len(f.status) for f in c.falsifiers), default=0)
        for f in c.falsifiers:
            lines.append(f"  {f.id.ljust(width)}  {f.status.ljust(swidth)}  {_evidence_text(f)}")
            lines.extend(f"  {'':{width}}  {note}" for note in _notes(f))
        if c.mismatch:
            lines.append(f"  mismatch: {c.mismatch}")
        lines.append("  " + _summary(c.counts, len(c.falsifiers), c.functional_share))
        lines.append("")
    lines.append("total: " + _summary(report.counts, report.total, report.functional_share))
    return "\n".join(lines)


def render_markdown(report: StatusReport) -> str:
    headline = (f"**{report.total} falsifiers** in {len(report.contracts)} contract(s); "
                f"FUNCTIONAL or better: **{report.functional_share:.0%}**")
    lines = ["## Falsifier status", "", headline, ""]
    for c in report.contracts:
        lines += [f"### `{c.id}` v{c.version or '?'}"
                  + (f" (metadata.status `{c.metadata_status}`)" if c.metadata_status else ""), ""]
        if c.mismatch:
            lines += [f"> **Mismatch:** {c.mismatch}", ""]
        lines += ["| Falsifier | Status | Evidence | Notes |", "|---|---|---|---|"]
        for f in c.falsifiers:
            notes = "; ".join(_notes(f)).replace("|", "\\|") or ""
            lines.append(f"| `{f.id}` | {f.status} | {_evidence_text(f)} | {notes} |")
        lines += ["", _summary(c.counts, len(c.falsifiers), c.functional_share), ""]
    return "\n".join(lines).rstrip() + "\n"
