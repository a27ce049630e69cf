"""``pv discharge --contract ID FALSIFIER --by WHO --reason WHY``: close a falsifier past FUNCTIONAL."""

from __future__ import annotations

from pathlib import Path

import click

from pv.cli.options import by_reason_options, contract_option, contracts_option, evidence_option


@click.command("discharge")
@click.argument("falsifier_id", metavar="FALSIFIER")
@contract_option(help="Contract id (metadata.id or file stem).", metavar="ID")
@by_reason_options("Who discharges it (a name or handle), kept in the record.",
                   "Why it is closed beyond testing (a proof, a review...).")
@click.option("--artifact", "artifacts", multiple=True, metavar="PATH",
              help="A repository file the discharge rests on (hashed into the record); repeatable.")
@contracts_option()
@evidence_option()
def command(falsifier_id: str, contract_id: str, by: str, reason: str, artifacts: tuple[str, ...],
            contracts_dir: Path | None, evidence_dir: Path | None) -> int:
    """Mark FALSIFIER DISCHARGED when live evidence meets every target of its discharge matrix.

    Refuses (exit 2, nothing written) unless the falsifier is backed by a live pass for every
    target, its covered files and artifacts are committed and unchanged since, and --by and
    --reason say who and why. See docs/falsify.md.
    """
    from pv.api import discharge
    from pv.repo import repo_root

    result = discharge(falsifier_id, contract=contract_id, by=by, reason=reason, artifacts=artifacts,
                       contracts_dir=contracts_dir, evidence_dir=evidence_dir)
    root = repo_root()
    try:
        shown = result.path.relative_to(root)
    except ValueError:
        shown = result.path
    click.echo(f"{falsifier_id}: DISCHARGED by {by}, resting on {len(result.backing)} live record(s) "
               f"and {len(result.artifacts)} artifact(s); record {shown}")
    if result.metadata_status is not None:
        click.echo(f"metadata.status -> {result.metadata_status}")
    return 0
