"""``pv scaffold CONTRACT``: falsifier test skeletons for a contract's unbound falsifiers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from pv.errors import ExitCode, PvError


@click.command("scaffold")
@click.argument("contract")
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path), default=None,
              help="Where to find CONTRACT by id [default: <repo>/contracts].")
@click.option("--tests", "tests_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of falsifier tests [default: <repo>/falsifiers].")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Test file to append to [default: <tests>/test_<contract id as a Python name>.py, "
                   "e.g. test_softmax_v1.py for softmax-v1].")
def command(contract: str, contracts_dir: Path | None, tests_dir: Path | None,
            output: Path | None) -> int:
    """Write a failing test skeleton (marker, prediction as docstring) for each falsifier of
    CONTRACT (an id or a file) that no test binds, and print the `test:` entries to add."""
    from pv.contract.coverage import marked_tests
    from pv.contract.discover import find_contracts
    from pv.contract.graph import load_set
    from pv.contract.scaffold import scaffold, skeleton_file_name
    from pv.repo import repo_root

    root = repo_root()
    if Path(contract).is_file():
        candidates = [Path(contract)]
    else:
        candidates = find_contracts([contracts_dir or root / "contracts"])
    docs, _ = load_set(candidates)
    matches = [d for d in docs if Path(contract).is_file() or contract in (d.contract_id, d.stem)]
    if not matches:
        raise PvError(f"{contract}: no such contract (give an id, a file stem or a path)")
    doc = matches[0]
    folder = tests_dir or root / "falsifiers"
    target = output or folder / skeleton_file_name(doc.contract_id)
    tests = marked_tests([folder], root) if folder.is_dir() else []
    added = scaffold(doc, target, tests)
    if not added:
        click.echo(f"{doc.contract_id}: every falsifier has a bound test; nothing to scaffold")
        return int(ExitCode.OK)
    rel = Path(os.path.relpath(target, root)).as_posix()
    click.echo(f"wrote {len(added)} skeleton(s) to {rel}; each fails until written. "
               f"Bind them in {doc.path}:")
    for s in added:
        click.echo(f"  {s.falsifier}: test: \"{s.node_id(rel)}\"")
    hint = _schema_hint(doc.path, root)
    if hint:
        click.echo(hint)
    return int(ExitCode.OK)


#: ``# yaml-language-server: $schema=PATH`` in a contract's first lines.
_MODELINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)", re.MULTILINE)


def _schema_hint(contract: Path, root: Path) -> str | None:
    """A line telling the user how editors get the contract schema, when the contract's modeline
    is missing or names a file that is not there; None when it resolves (or is a URL)."""
    from pv.cli.schema import modeline

    try:
        with contract.open(encoding="utf-8", errors="replace") as f:
            head = "".join(f.readline() for _ in range(5))
    except OSError:
        return None
    shown = Path(os.path.relpath(contract, root)).as_posix()
    found = _MODELINE.search(head)
    if found is None:
        return (f"hint: start {shown} with `{modeline(contract.resolve().parent, root / 'schemas')}` so editors "
                "check it, and run `pv schema --write` to put the schema there")
    target = found.group(1)
    if "://" in target or (contract.parent / target).is_file():
        return None
    return (f"hint: {shown}'s modeline names {target}, which does not exist: `pv schema --write` "
            "writes the schema into <repo>/schemas")
