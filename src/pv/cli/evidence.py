"""``pv evidence prune``: compact an old evidence store, keeping every record a status rests on."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.cli.options import JSON, TEXT, contracts_option, evidence_option, format_option


@click.group("evidence")
def command() -> None:
    """Look after the evidence store (evidence/<contract>/<falsifier>/)."""


@command.command("prune")
@contracts_option()
@evidence_option()
@click.option("--keep-days", type=int, default=None, metavar="N", help="Remove records older than N days.")
@click.option("--before", default=None, metavar="DATE",
              help="Remove records that finished before DATE (2026-01-31, or 2026-01-31T12:00:00Z).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; write and delete nothing.")
@format_option(TEXT, JSON)
def prune(contracts_dir: Path | None, evidence_dir: Path | None, keep_days: int | None, before: str | None,
          dry_run: bool, fmt: str) -> int:
    """Remove old records that no status rests on, leaving a prune record in each pruned chain.

    Keeps the head of every chain, the newest record, the record backing each status, the
    latest failure, the latest skip behind a blocker, discharge records and the live records
    they rest on, and every prune record. Each pruned falsifier's chain gets a ``kind: prune``
    record listing what went (file names, hashes, links), so the chain still verifies and
    ``pv gate`` accepts the deletion. Commit the deletions with the prune records. See
    docs/falsify.md.
    """
    from pv.api import prune_evidence

    report = prune_evidence(contracts_dir=contracts_dir, evidence_dir=evidence_dir, keep_days=keep_days,
                            before=before, dry_run=dry_run)
    if fmt == JSON:
        click.echo(json.dumps(report.to_json(), indent=2))
        return 0
    verb = "would remove" if dry_run else "removed"
    for f in report.falsifiers:
        if f.removed:
            tail = f"; prune record {f.record}" if f.record else ""
            click.echo(f"{f.contract_id}/{f.falsifier_id}: {verb} {len(f.removed)} record(s), {f.kept} kept{tail}")
    pruned = sum(1 for f in report.falsifiers if f.removed)
    click.echo(f"pv evidence prune: {verb} {report.removed} record(s) finished before {report.cutoff} from "
               f"{pruned} of {len(report.falsifiers)} falsifier(s)"
               + (" (dry run: nothing written or deleted)" if dry_run else "; commit the deletions with the "
                  "prune records"))
    return 0
