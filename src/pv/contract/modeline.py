"""The contract schema where editors find it: pv's packaged schemas, written where a contract's
modeline can name them (``pv schema``), and the hint ``pv scaffold`` gives when it cannot.

A contract's modeline (``# yaml-language-server: $schema=../schemas/contract.schema.json``)
names a file relative to the contract. pv's own repository has that folder; another
repository gets it from here: the schemas packaged with the pv that validates its
contracts, so the editor and ``pv validate`` agree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pv import files
from pv.errors import PvError

#: Written by ``pv schema --write``: the contract schema (for the modeline) and the evidence schema.
SCHEMAS = ("contract.schema.json", "evidence.schema.json")
#: ``# yaml-language-server: $schema=PATH`` in a contract's first lines.
_MODELINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)", re.MULTILINE)
#: How much of a contract's head is searched for its modeline.
_HEAD_BYTES = 4096


def packaged(name: str) -> bytes:
    """The bytes of one of pv's packaged schemas (``pv/schemas/<name>``)."""
    return resources.files("pv").joinpath("schemas", name).read_bytes()


def modeline(contract_dir: Path, schema_dir: Path) -> str:
    """The first line a contract in ``contract_dir`` needs to name ``schema_dir``'s contract schema."""
    rel = Path(os.path.relpath(schema_dir / SCHEMAS[0], contract_dir)).as_posix()
    return f"# yaml-language-server: $schema={rel}"


@dataclass(frozen=True)
class Written:
    """One schema file ``write_schemas`` handled: ``what`` is wrote, replaced or unchanged."""

    path: Path
    what: str


@dataclass(frozen=True)
class Schemas:
    """What ``pv schema`` shows or did: the contract schema's text, and, when writing, each file
    written and the modeline a contract in ``<repo>/contracts`` would start with."""

    text: str
    written: tuple[Written, ...] = ()
    folder: Path | None = None
    modeline: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder) if self.folder else None, "modeline": self.modeline,
                "written": [{"path": str(w.path), "what": w.what} for w in self.written]}


def write_schemas(folder: Path, *, force: bool = False) -> list[Written]:
    """Write pv's schemas into ``folder``, each as wrote, replaced or unchanged.

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
                same = files.read_regular(target, len(data) + 1) == data
            except files.TooLargeError:
                same = False
            except OSError as exc:
                raise PvError(f"{target}: cannot read: {exc.strerror or exc}") from None
            if not same and not force:
                raise PvError(f"{target} exists and differs from pv's schema; pass --force to replace it")
            plan.append((target, data, "unchanged" if same else "replaced"))
        else:
            plan.append((target, data, "wrote"))
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
    return [Written(target, what) for target, _, what in plan]


def schemas(root: Path, write: bool | str | os.PathLike[str] = False, *, force: bool = False) -> Schemas:
    """``pv schema``: the contract schema, and with ``write`` (True: ``<root>/schemas``, or a
    folder) the schemas written there."""
    text = packaged(SCHEMAS[0]).decode("utf-8")
    if write is False:
        if force:
            raise PvError("--force only goes with --write")
        return Schemas(text)
    folder = root / "schemas" if write is True else Path(write)
    written = write_schemas(folder, force=force)
    return Schemas(text, tuple(written), folder, modeline(root / "contracts", folder.resolve()))


def schema_hint(contract: Path, root: Path) -> str | None:
    """A line telling the user how editors get the contract schema, when the contract's modeline
    is missing or names a file that is not there; None when it resolves (or is a URL)."""
    try:
        head = files.read_regular(contract, files.MAX_SOURCE_BYTES)[:_HEAD_BYTES].decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    head = "".join(head.splitlines(keepends=True)[:5])
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


__all__ = ["SCHEMAS", "Schemas", "Written", "modeline", "packaged", "schema_hint", "schemas", "write_schemas"]
