"""``pv schema [--write [DIR]] [--force]``: the contract schema, for a repository's own editors.

A contract's modeline (``# yaml-language-server: $schema=../schemas/contract.schema.json``)
names a file relative to the contract. pv's own repository has that folder; another
repository gets it from here: the schemas packaged with the pv that validates its
contracts, so the editor and ``pv validate`` agree.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import click

from pv.errors import ExitCode, PvError

#: Written by ``--write``: the contract schema (for the modeline) and the evidence schema.
SCHEMAS = ("contract.schema.json", "evidence.schema.json")


def packaged(name: str) -> bytes:
    """The bytes of one of pv's packaged schemas (``pv/schemas/<name>``)."""
    return resources.files("pv").joinpath("schemas", name).read_bytes()


def modeline(contract_dir: Path, schema_dir: Path) -> str:
    """The first line a contract in ``contract_dir`` needs to name ``schema_dir``'s contract schema."""
    rel = Path(os.path.relpath(schema_dir / SCHEMAS[0], contract_dir)).as_posix()
    return f"# yaml-language-server: $schema={rel}"


def write_schemas(folder: Path, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write pv's schemas into ``folder``: (path, "wrote" | "replaced" | "unchanged") for each.

    Every target is checked before any is written: a different file in the way is
    refused unless ``force``, and nothing is written then.
    """
    plan: list[tuple[Path, bytes, str]] = []
    for name in SCHEMAS:
        target = folder / name
        data = packaged(name)
        if os.path.lexists(target):
            if target.is_symlink() or not target.is_file():
                raise PvError(f"{target} exists and is not a regular file; refusing to write the schema there")
            try:
                same = target.read_bytes() == data
            except OSError as exc:
                raise PvError(f"{target}: cannot read: {exc.strerror or exc}") from None
            if not same and not force:
                raise PvError(f"{target} exists and differs from pv's schema; pass --force to replace it")
            plan.append((target, data, "unchanged" if same else "replaced"))
        else:
            plan.append((target, data, "wrote"))
    from pv import files

    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, data, what in plan:
            if what == "replaced":
                files.replace_bytes(target, data)
            elif what == "wrote":
                files.create_bytes(target, data)
    except FileExistsError as exc:
        raise PvError(f"{exc.filename}: created by someone else meanwhile; run pv schema --write again") from None
    except OSError as exc:
        raise PvError(f"cannot write the schemas into {folder}: {exc.strerror or exc}") from None
    return [(target, what) for target, _, what in plan]


@click.command("schema")
@click.option("--write", "write_dir", type=click.Path(path_type=Path, file_okay=False), is_flag=False,
              flag_value=".pv-default", default=None, metavar="[DIR]",
              help="Write contract.schema.json and evidence.schema.json into DIR "
                   "[default DIR: <repo>/schemas] instead of printing the contract schema.")
@click.option("--force", is_flag=True, help="With --write: replace a schema file that differs.")
def command(write_dir: Path | None, force: bool) -> int:
    """Print pv's contract schema (JSON Schema 2020-12), or write the schemas into a folder
    that contracts' `# yaml-language-server: $schema=...` modelines can name."""
    if write_dir is None:
        if force:
            raise PvError("--force only goes with --write")
        click.echo(packaged(SCHEMAS[0]).decode("utf-8"), nl=False)
        return int(ExitCode.OK)
    from pv.repo import repo_root

    root = repo_root()
    folder = root / "schemas" if str(write_dir) == ".pv-default" else write_dir
    for target, what in write_schemas(folder, force=force):
        click.echo(f"{what} {_shown(target, root)}")
    click.echo(f"a contract in {_shown(root / 'contracts', root)}/ names it with its first line: "
               f"{modeline(root / 'contracts', folder.resolve())}")
    return int(ExitCode.OK)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
