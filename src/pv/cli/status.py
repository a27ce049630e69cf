"""``pv status``: falsifier statuses per contract and in total, with their evidence."""

from __future__ import annotations

from pathlib import Path

import click

from pv.cli.options import JSON, MARKDOWN, TEXT, evidence_option, format_option, paths_argument


@click.command("status")
@paths_argument()
@click.option("--contract", "contract_id", default=None, metavar="ID", help="Only this contract.")
@evidence_option()
@format_option(TEXT, JSON, MARKDOWN,
               help="markdown is ready to paste into a pull request; json is a gate baseline.")
def command(paths: tuple[Path, ...], contract_id: str | None, evidence_dir: Path | None, fmt: str) -> int:
    """Report falsifier statuses and the evidence behind them (default PATH: <repo>/contracts)."""
    from pv.api import status
    from pv.report import status_render

    report = status(paths, contract=contract_id, evidence_dir=evidence_dir)
    render = {TEXT: status_render.render_text, JSON: status_render.to_json,
              MARKDOWN: status_render.render_markdown}[fmt]
    click.echo(render(report))
    return 0
