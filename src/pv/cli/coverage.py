"""``pv coverage [PATH...]``: obligations no falsifier enforces, falsifiers with no test, tests with no falsifier."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.cli.options import JSON, TEXT, format_option, paths_argument, tests_option
from pv.errors import ExitCode


@click.command("coverage")
@paths_argument()
@tests_option(multiple=True, help="Folders (or files) of falsifier tests [default: <repo>/falsifiers].")
@format_option(TEXT, JSON)
@click.option("--strict", is_flag=True, help="Exit 1 when anything is uncovered (an orphan marker always does).")
def command(paths: tuple[Path, ...], tests_dirs: tuple[Path, ...], fmt: str, strict: bool) -> int:
    """Per contract (default PATH: <repo>/contracts): proof obligations that no falsifier
    cites, falsifiers that no test binds, and marked tests that bind no falsifier.

    A test marked for an id that no contract defines (an orphan marker) is an error:
    pv falsify refuses every contract while it is there, so the exit status is 1
    with or without --strict."""
    from pv.api import coverage

    result = coverage(paths, tests=tests_dirs)
    if fmt == JSON:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        for c in result.contracts:
            enforced = c.obligations - len(c.unenforced)
            tested = c.falsifiers - len(c.untested)
            click.echo(f"{c.id}: {enforced}/{c.obligations} obligations enforced, "
                       f"{tested}/{c.falsifiers} falsifiers with a bound test")
            for ob in c.unenforced:
                click.echo(f"  obligation {ob}: no falsifier enforces it")
            for fid, why in c.untested:
                click.echo(f"  falsifier {fid}: no test ({why})")
        errors = {(m.test.node_id, m.why): m for m in result.orphan_markers}
        for t, why in result.orphans:
            marker = errors.get((t.node_id, why))
            click.echo(f"error: {marker.message()}" if marker else f"test {t.node_id} (line {t.line}): "
                       f"no falsifier ({why})")
        for line in result.skipped:
            click.echo(f"skipped: {line}")
        verdict = "coverage complete" if result.complete else "coverage incomplete"
        n = len(result.orphan_markers)
        click.echo(verdict + (f"; {n} orphan marker(s), an error" if n else ""))
    return int(ExitCode.FINDINGS if result.failed(strict) else ExitCode.OK)
