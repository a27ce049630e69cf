"""``pv status``: falsifier statuses per contract and in total, with their evidence."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("status")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--contract", "contract_id", default=None, metavar="ID", help="Only this contract.")
@click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None,
              help="Evidence folder [default: <repo>/evidence].")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="markdown is ready to paste into a pull request; json is a gate baseline.")
def command(paths: tuple[Path, ...], contract_id: str | None, evidence_dir: Path | None, fmt: str) -> int:
    """Report falsifier statuses and the evidence behind them (default PATH: <repo>/contracts)."""
    from pv.contract.model import load_contracts, select
    from pv.repo import repo_root
    from pv.report import status, status_render

    root = repo_root()
    contracts = load_contracts(list(paths) or [root / "contracts"])
    if contract_id:
        contracts = [select(contracts, contract_id)]
    report = status.collect(contracts, (evidence_dir or root / "evidence").resolve(), root)
    render = {"text": status_render.render_text, "json": status_render.to_json,
              "markdown": status_render.render_markdown}[fmt]
    click.echo(render(report))
    return 0
