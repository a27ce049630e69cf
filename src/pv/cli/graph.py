"""``pv graph [PATH...]``: the depends_on graph of a contracts folder, cycles flagged."""

from __future__ import annotations

from pathlib import Path

import click

from pv.cli.options import JSON, TEXT, format_option, paths_argument
from pv.errors import ExitCode

DOT, MERMAID = "dot", "mermaid"


@click.command("graph")
@paths_argument()
@format_option(DOT, MERMAID, TEXT, JSON, default=DOT,
               help="Graphviz dot, a Mermaid flowchart, one line per contract, or the graph as JSON.")
def command(paths: tuple[Path, ...], fmt: str) -> int:
    """Print the graph of metadata.depends_on between contracts (default PATH: <repo>/contracts).

    Contracts in a dependency cycle are drawn in red and listed on stderr; the exit
    status is then 1. A dependency that names no contract is drawn dashed.
    """
    import json

    from pv.api import graph as depends_on
    from pv.contract.graph import to_dot, to_mermaid, to_text

    graph = depends_on(paths)
    if fmt == JSON:
        click.echo(json.dumps(graph.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo({DOT: to_dot, MERMAID: to_mermaid, TEXT: to_text}[fmt](graph))
    for line in graph.skipped:
        click.echo(f"pv graph: skipped {line}", err=True)
    for cycle in graph.cycles:
        click.echo(f"pv graph: dependency cycle: {' -> '.join(cycle)} -> {cycle[0]}", err=True)
    return int(ExitCode.FINDINGS if graph.cycles else ExitCode.OK)
