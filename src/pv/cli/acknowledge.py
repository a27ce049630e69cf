"""``pv acknowledge``: accept a weaker claim on the record, so that ``pv gate`` lets it pass."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("acknowledge")
@click.option("--contract", "contract_id", required=True, metavar="ID|PATH",
              help="Contract id (metadata.id or file stem), or the path of its file.")
@click.option("--by", required=True, metavar="WHO", help="Who accepts the weaker claim (a name and address).")
@click.option("--reason", required=True, metavar="WHY", help="Why the claim may be weaker now.")
@click.option("--baseline", default=None, metavar="GITREF|FILE",
              help="What the claim is compared with [default: the gate's baseline, the merge base with main].")
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of contracts [default: <repo>/contracts].")
def command(contract_id: str, by: str, reason: str, baseline: str | None, contracts_dir: Path | None) -> int:
    """Record in the contract (claim_changes) who accepts its weaker claim and why.

    Refuses when the claim is not weaker than at the baseline. The entry names the
    sha256 of the claim as it is now: edit the claim again and it needs another.
    """
    from pv.report.acknowledge import acknowledge

    done = acknowledge(contract_id, by=by, reason=reason, baseline=baseline,
                       contract_paths=[contracts_dir] if contracts_dir is not None else [])
    click.echo(f"acknowledged {len(done.weakenings)} weaker claim(s) of {done.contract.id} against "
               f"{done.baseline}, by {done.entry['by']}:")
    for w in done.weakenings:
        click.echo(f"  {w.format()}")
    click.echo(f"written to {done.contract.path} ({'claim_changes'}, claim {done.entry['claim'][:12]}...); "
               "commit it with the change it accepts")
    return 0
