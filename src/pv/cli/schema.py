"""``pv schema [--write [DIR]] [--force]``: the contract schema, for a repository's own editors
(``pv.contract.modeline`` finds and writes it; this prints)."""

from __future__ import annotations

from pathlib import Path

import click

from pv.errors import ExitCode

#: What click hands over for ``--write`` without a folder: the repository's ``schemas/``.
_DEFAULT = ".pv-default"


@click.command("schema")
@click.option("--write", "write_dir", type=click.Path(path_type=Path, file_okay=False), is_flag=False,
              flag_value=_DEFAULT, default=None, metavar="[DIR]",
              help="Write contract.schema.json and evidence.schema.json into DIR "
                   "[default DIR: <repo>/schemas] instead of printing the contract schema.")
@click.option("--force", is_flag=True, help="With --write: replace a schema file that differs.")
def command(write_dir: Path | None, force: bool) -> int:
    """Print pv's contract schema (JSON Schema 2020-12), or write the schemas into a folder
    that contracts' `# yaml-language-server: $schema=...` modelines can name."""
    from pv.api import schema
    from pv.repo import repo_root

    done = schema(write=False if write_dir is None else True if str(write_dir) == _DEFAULT else write_dir,
                  force=force)
    if not done.written:
        click.echo(done.text, nl=False)
        return int(ExitCode.OK)
    root = repo_root()
    for w in done.written:
        click.echo(f"{w.what} {_shown(w.path, root)}")
    click.echo(f"a contract in {_shown(root / 'contracts', root)}/ names it with its first line: {done.modeline}")
    return int(ExitCode.OK)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
