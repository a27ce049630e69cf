"""``pv graph [PATH...]``: the depends_on graph of a contracts folder, cycles flagged."""

from __future__ import annotations

from pathlib import Path

import click

from pv.errors import ExitCode


@click.command("graph")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "text"]), default="dot",
              show_default=True, help="Graphviz dot, a Mermaid flowchart, or one line per contract.")
def command(paths: tuple[Path, ...], fmt: str) -> int:
    """Print the graph of metadata.depends_on between contracts (default PATH: <repo>/contracts).

    Contracts in a dependency cycle are drawn in red and listed on stderr; the exit
    status is then 1. A dependency that names no contract is drawn dashed.
    """
    from pv.contract.discover import find_contracts
    from pv.contract.graph import build, load_set, to_dot, to_mermaid, to_text
    from pv.repo import repo_root

    files = find_contracts(list(paths) or [repo_root() / "contracts"])
    docs, skipped = load_set(files)
    graph = build(docs, skipped)
    click.echo({"dot": to_dot, "mermaid": to_mermaid, "text": to_text}[fmt](graph))
    for line in skipped:
        click.echo(f"pv graph: skipped {line}", err=True)
    for cycle in graph.cycles:
        click.echo(f"pv graph: dependency cycle: {' -> '.join(cycle)} -> {cycle[0]}", err=True)
    return int(ExitCode.FINDINGS if graph.cycles else ExitCode.OK)
