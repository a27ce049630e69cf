"""``pv discharge --contract ID FALSIFIER --by WHO --reason WHY``: close a falsifier past FUNCTIONAL."""

from __future__ import annotations

from pathlib import Path

import click

from pv.errors import PvError


@click.command("discharge")
@click.argument("falsifier_id", metavar="FALSIFIER")
@click.option("--contract", "contract_id", required=True, metavar="ID", help="Contract id (metadata.id or file stem).")
@click.option("--by", required=True, help="Who discharges it (a name or handle), kept in the record.")
@click.option("--reason", required=True, help="Why it is closed beyond testing (a proof, a review...).")
@click.option("--artifact", "artifacts", multiple=True, metavar="PATH",
              help="A repository file the discharge rests on (hashed into the record); repeatable.")
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder (or file) of contracts [default: <repo>/contracts].")
@click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None,
              help="Evidence folder [default: <repo>/evidence].")
def command(falsifier_id: str, contract_id: str, by: str, reason: str, artifacts: tuple[str, ...],
            contracts_dir: Path | None, evidence_dir: Path | None) -> int:
    """Mark FALSIFIER DISCHARGED when live evidence meets every target of its discharge matrix.

    Refuses (exit 2, nothing written) unless the falsifier is backed by a live pass for every
    target, its covered files and artifacts are committed and unchanged since, and --by and
    --reason say who and why. See docs/falsify.md.
    """
    from pv.contract.model import load_contracts, select
    from pv.falsify.discharge import discharge
    from pv.repo import repo_root

    root = repo_root()
    contracts_path = (contracts_dir or root / "contracts").resolve()
    if not contracts_path.exists():
        raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
    contract = select(load_contracts([contracts_path]), contract_id)
    result = discharge(contract, falsifier_id, by=by, reason=reason, root=root,
                       evidence_dir=(evidence_dir or root / "evidence").resolve(), artifacts=artifacts)
    try:
        shown = result.path.relative_to(root)
    except ValueError:
        shown = result.path
    click.echo(f"{falsifier_id}: DISCHARGED by {by}, resting on {len(result.backing)} live record(s) "
               f"and {len(result.artifacts)} artifact(s); record {shown}")
    if result.metadata_status is not None:
        click.echo(f"metadata.status -> {result.metadata_status}")
    return 0
