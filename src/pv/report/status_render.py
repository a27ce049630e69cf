"""``pv status`` as text, markdown and JSON: the same ``StatusReport`` three ways.

The JSON doubles as a gate baseline (``pv gate --baseline FILE``): it keeps every
record file's sha256 and each contract's claim view. The text and markdown say,
for every pass that is not live, why (``device=cuda (measured: cpu)``), and count
in their percentage only statuses that are supported and rest on fresh evidence.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pv.contract import ladder
from pv.falsify import records as rec
from pv.report.status import SNAPSHOT_KIND, ContractStatus, FalsifierStatus, StatusReport


def to_dict(report: StatusReport) -> dict[str, Any]:
    def contract(c: ContractStatus) -> dict[str, Any]:
        return {"id": c.id, "path": c.path, "version": c.version, "metadata_status": c.metadata_status,
                "mismatch": c.mismatch, "counts": c.counts, "functional_share": round(c.functional_share, 4),
                "falsifiers": [{**asdict(f), "stale": f.stale, "counts_as_functional": f.counts_as_functional}
                               for f in c.falsifiers],
                "claim": dict(c.claim)}
    settings = report.settings
    return {"kind": SNAPSHOT_KIND, "version": 1, "contracts": [contract(c) for c in report.contracts],
            "settings": {"stale_evidence": settings.stale_evidence, "by": settings.stale_by,
                         "reason": settings.stale_reason},
            "total": {"falsifiers": report.total, "counts": report.counts,
                      "functional_share": round(report.functional_share, 4)}}


def to_json(report: StatusReport) -> str:
    return json.dumps(to_dict(report), indent=2)


#: What ``judge.reach`` says of a pass that does not meet the live requirements.
_UNMET = "live requirements not met: "


def why_not_live(why: str) -> str:
    """``not live: device=cuda (measured: cpu)``, with a hint when the test measured nothing."""
    text = why.removeprefix(_UNMET)
    hint = ("; the test handed pv nothing to measure (falsifier_record.observe(...))"
            if "(not measured)" in text else "")
    return f"not live: {text}{hint}"


def _evidence_text(f: FalsifierStatus) -> str:
    if f.latest is None:
        return "no evidence"
    live = ("live" if f.latest.live else "not live") if f.latest.requirements else "no live requirements"
    if f.latest.outcome == rec.PASSED and not f.latest.live:
        live = why_not_live(f.latest.why) if f.latest.why.startswith(_UNMET) else f"backs nothing: {f.latest.why}"
    text = f"latest {f.latest.outcome} {f.latest.finished_at[:19]}Z ({live})"
    if f.backing is not None and f.backing.path != f.latest.path:
        text += f"; backed by {f.backing.outcome} {f.backing.finished_at[:19]}Z"
    return text


def _notes(f: FalsifierStatus) -> list[str]:
    notes = list(f.problems)
    if f.written is not None and ladder.normalize(f.written) is None:
        rung = ladder.interpret(f.written)
        notes.append(f"written {f.written!r}: not on the ladder, counted as {f.status}"
                     + (f" (the word means {rung})" if rung and rung != f.status else ""))
    if f.blocked_reason:
        notes.append(f"blocked: {f.blocked_reason}")
    if not f.supported:
        notes.append(f"unsupported: {f.unsupported_reason}")
    if f.stale and f.backing is not None:
        left_out = " (not counted as FUNCTIONAL)" if ladder.rank(f.status) >= ladder.rank(ladder.FUNCTIONAL) else ""
        notes.append(f"stale{left_out}: {f.stale_text} changed since {f.backing.path} ran")
    if f.stale_live:
        notes.append(f"below FUNCTIONAL: {f.stale_live}")
    return notes


def _summary(counts: dict[str, int], total: int, share: float) -> str:
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{total} falsifiers: {parts or 'none'}; FUNCTIONAL or better, supported and fresh: {share:.0%}"


def _flags(c: ContractStatus) -> list[str]:
    """What a reader should know before trusting the rows: the contract fails ``pv validate``,
    or its metadata.status is not on the ladder."""
    from pv.contract.validate import validation_note_for

    flags = []
    note = validation_note_for(c.path)
    if note:
        flags.append(note)
    if c.metadata_status and ladder.normalize(c.metadata_status) is None:
        rung = ladder.interpret(c.metadata_status)
        flags.append(f"metadata.status {c.metadata_status!r} is not on the ladder"
                     + (f" (the word means {rung})" if rung else ""))
    return flags


def render_text(report: StatusReport) -> str:
    lines: list[str] = [] if report.settings.stale_blocks else [f"note: {report.settings.describe()}", ""]
    for c in report.contracts:
        meta = f", metadata.status {c.metadata_status}" if c.metadata_status else ""
        lines.append(f"{c.id} (v{c.version or '?'}{meta}) {c.path}")
        lines.extend(f"  ! {flag}" for flag in _flags(c))
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
                f"FUNCTIONAL or better, supported and fresh: **{report.functional_share:.0%}**")
    lines = ["## Falsifier status", "", headline, ""]
    if not report.settings.stale_blocks:
        lines += [f"> **Note:** {report.settings.describe()}", ""]
    for c in report.contracts:
        lines += [f"### `{c.id}` v{c.version or '?'}"
                  + (f" (metadata.status `{c.metadata_status}`)" if c.metadata_status else ""), ""]
        for flag in _flags(c):
            lines += [f"> **Warning:** {flag}", ""]
        if c.mismatch:
            lines += [f"> **Mismatch:** {c.mismatch}", ""]
        lines += ["| Falsifier | Status | Evidence | Notes |", "|---|---|---|---|"]
        for f in c.falsifiers:
            notes = "; ".join(_notes(f)).replace("|", "\\|") or ""
            lines.append(f"| `{f.id}` | {f.status} | {_evidence_text(f)} | {notes} |")
        lines += ["", _summary(c.counts, len(c.falsifiers), c.functional_share), ""]
    return "\n".join(lines).rstrip() + "\n"
