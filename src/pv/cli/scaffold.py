"""``pv scaffold CONTRACT``: falsifier test skeletons for a contract's unbound falsifiers."""

from __future__ import annotations

from pathlib import Path

import click

from pv.cli.options import contracts_option, tests_option
from pv.errors import ExitCode


@click.command("scaffold")
@click.argument("contract")
@contracts_option(help="Where to find CONTRACT by id [default: <repo>/contracts].")
@tests_option()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Test file to append to [default: <tests>/test_<contract id as a Python name>.py, "
                   "e.g. test_softmax_v1.py for softmax-v1].")
def command(contract: str, contracts_dir: Path | None, tests_dir: Path | None,
            output: Path | None) -> int:
    """Write a failing test skeleton (marker, prediction as docstring) for each falsifier of
    CONTRACT (an id or a file) that no test binds, and print the `test:` entries to add."""
    from pv.api import scaffold

    done = scaffold(contract, contracts_dir=contracts_dir, tests_dir=tests_dir, output=output)
    if not done.added:
        click.echo(f"{done.contract_id}: every falsifier has a bound test; nothing to scaffold")
        return int(ExitCode.OK)
    click.echo(f"wrote {len(done.added)} skeleton(s) to {done.test_file_shown}; each fails until written. "
               f"Bind them in {done.contract_path}:")
    for falsifier, node in done.test_entries:
        click.echo(f"  {falsifier}: test: \"{node}\"")
    if done.hint:
        click.echo(done.hint)
    return int(ExitCode.OK)
