"""``pv coverage [PATH...]``: obligations no falsifier enforces, falsifiers with no test, tests with no falsifier."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.errors import ExitCode


@click.command("coverage")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--tests", "tests_dirs", type=click.Path(path_type=Path, exists=True), multiple=True,
              help="Folders (or files) of falsifier tests [default: <repo>/falsifiers].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 when anything is uncovered (an orphan marker always does).")
def command(paths: tuple[Path, ...], tests_dirs: tuple[Path, ...], fmt: str, strict: bool) -> int:
    """Per contract (default PATH: <repo>/contracts): proof obligations that no falsifier
    cites, falsifiers that no test binds, and marked tests that bind no falsifier.

    A test marked for an id that no contract defines (an orphan marker) is an error:
    pv falsify refuses every contract while it is there, so the exit status is 1
    with or without --strict."""
    from pv.contract.coverage import coverage, marked_tests
    from pv.contract.discover import find_contracts
    from pv.contract.graph import load_set
    from pv.repo import repo_root

    root = repo_root()
    docs, skipped = load_set(find_contracts(list(paths) or [root / "contracts"]))
    folders = list(tests_dirs) or [p for p in [root / "falsifiers"] if p.is_dir()]
    result = coverage(docs, marked_tests(folders, root))
    if fmt == "json":
        click.echo(json.dumps({
            "complete": result.complete,
            "contracts": [{"id": c.id, "file": c.file, "obligations": c.obligations,
                           "unenforced_obligations": list(c.unenforced),
                           "falsifiers": c.falsifiers,
                           "untested_falsifiers": [{"id": f, "why": w} for f, w in c.untested],
                           "bound_tests": {f: list(n) for f, n in c.bound.items()}}
                          for c in result.contracts],
            "tests_without_falsifier": [{"test": t.node_id, "line": t.line, "why": w}
                                        for t, w in result.orphans],
            "orphan_markers": [{"test": m.test.node_id, "line": m.test.line, "id": m.falsifier,
                                "closest": m.closest} for m in result.orphan_markers],
            "skipped": skipped,
        }, indent=2, ensure_ascii=False))
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
        for line in skipped:
            click.echo(f"skipped: {line}")
        verdict = "coverage complete" if result.complete else "coverage incomplete"
        n = len(result.orphan_markers)
        click.echo(verdict + (f"; {n} orphan marker(s), an error" if n else ""))
    failed = bool(result.orphan_markers) or (strict and not result.complete)
    return int(ExitCode.FINDINGS if failed else ExitCode.OK)
