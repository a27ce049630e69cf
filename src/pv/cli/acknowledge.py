"""``pv acknowledge``: accept a weaker claim on the record, so that ``pv gate`` lets it pass."""

from __future__ import annotations

from pathlib import Path

import click

from pv.cli.options import by_reason_options, contract_option, contracts_option


@click.command("acknowledge")
@contract_option()
@by_reason_options("Who accepts the weaker claim (a name and address).", "Why the claim may be weaker now.")
@click.option("--baseline", default=None, metavar="GITREF|FILE",
              help="What the claim is compared with [default: the gate's baseline, the merge base with main].")
@contracts_option(help="Folder of contracts [default: <repo>/contracts].")
def command(contract_id: str, by: str, reason: str, baseline: str | None, contracts_dir: Path | None) -> int:
    """Record in the contract (claim_changes) who accepts its weaker claim and why.

    Refuses when the claim is not weaker than at the baseline. The entry names the
    sha256 of the claim as it is now: edit the claim again and it needs another.
    """
    from pv.api import acknowledge

    done = acknowledge(contract_id, by=by, reason=reason, baseline=baseline, contracts_dir=contracts_dir)
    click.echo(f"acknowledged {len(done.weakenings)} weaker claim(s) of {done.contract.id} against "
               f"{done.baseline}, by {done.entry['by']}:")
    for w in done.weakenings:
        click.echo(f"  {w.format()}")
    click.echo(f"written to {done.contract.path} (claim_changes, claim {done.entry['claim'][:12]}...); "
               "commit it with the change it accepts")
    return 0
