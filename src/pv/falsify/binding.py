"""Which falsifier ids a pytest item is bound to, and what is bound to nothing.

``binding_for`` is a pure function of an item's markers, so the plugin, the
runner and the tests ask the same question the same way. An id is written
exactly as in the contract (``FALSIFY-ATTN-SUB-004``); a marker may name
several, and a test may carry several markers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.contract.model import base_node_id
from pv.errors import PvError

MARKER = "falsifies"
#: Skip reasons starting with this mean "this machine lacks a fixture" (GPU, model file).
FIXTURE_ABSENT_PREFIX = "fixture absent: "


class BindingError(PvError):
    """A ``falsifies`` marker that names no usable id."""


def binding_for(item: Any) -> tuple[str, ...]:
    """Falsifier ids named by ``item``'s ``falsifies`` markers, in order, without repeats."""
    ids: list[str] = []
    for mark in item.iter_markers(name=MARKER):
        if not mark.args:
            raise BindingError(f"{item.nodeid}: @pytest.mark.{MARKER}() needs at least one falsifier id")
        for arg in mark.args:
            if not isinstance(arg, str) or not arg.strip():
                raise BindingError(f"{item.nodeid}: falsifier ids are non-empty strings, got {arg!r}")
            fid = arg.strip()
            if fid not in ids:
                ids.append(fid)
    return tuple(ids)


@dataclass(frozen=True)
class BindingReport:
    """The binding problems of one collection: both kinds are errors for ``pv falsify``."""

    #: id -> test node ids naming it, for ids that no contract defines.
    orphans: Mapping[str, tuple[str, ...]]
    #: Falsifier ids of the selected contract that no collected test names.
    unbound: tuple[str, ...]
    #: (falsifier id, node id): marked for the falsifier, but its ``test:`` does not name it.
    unnamed: tuple[tuple[str, str], ...] = ()
    #: (falsifier id, node id): named by ``test:``, but no collected test with that id is marked.
    missing: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.unbound and not self.unnamed and not self.missing

    def messages(self) -> list[str]:
        out = [f"orphan marker: {fid} is in no contract (named by {', '.join(nodes)})"
               for fid, nodes in sorted(self.orphans.items())]
        out += [f"unbound falsifier: {fid} has no test marked @pytest.mark.{MARKER}({fid!r})"
                for fid in self.unbound]
        out += [f"unnamed test: {node} is marked for {fid}, but the contract's test: does not name it "
                "(add it there, or remove the marker)" for fid, node in self.unnamed]
        out += [f"missing test: {fid}'s test: names {node}, but no collected test with that id is marked "
                f"@pytest.mark.{MARKER}({fid!r})" for fid, node in self.missing]
        return out


def check(bound: Mapping[str, Sequence[str]], known_ids: Iterable[str],
          selected_ids: Iterable[str] = (), named: Mapping[str, Sequence[str]] | None = None) -> BindingReport:
    """Orphans among ``bound`` (id -> node ids), unbound ids among ``selected_ids``, and, given
    ``named`` (id -> node ids its ``test:`` names), marked tests not named and named tests not marked."""
    known = set(known_ids)
    orphans = {fid: tuple(nodes) for fid, nodes in bound.items() if fid not in known}
    unbound = tuple(fid for fid in selected_ids if fid not in bound)
    unnamed: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    if named is not None:
        scope = list(selected_ids) or [fid for fid in named if fid in known]
        for fid in scope:
            wanted = set(named.get(fid, ()))
            have = {base_node_id(n) for n in bound.get(fid, ())}
            unnamed += [(fid, n) for n in bound.get(fid, ()) if base_node_id(n) not in wanted]
            if fid in bound:
                missing += [(fid, n) for n in sorted(wanted - have)]
    return BindingReport(orphans, unbound, tuple(unnamed), tuple(missing))


def scan_markers(folder: Path, root: Path) -> dict[str, list[str]]:
    """Falsifier id -> node ids of tests marked for it, read statically (``ast``, no import).

    What ``pv gate`` needs to check binding without running pytest or importing
    torch: module-level test functions and methods of ``Test*`` classes, with
    ``@pytest.mark.falsifies("ID", ...)`` on the function or its class.
    """
    import ast

    bound: dict[str, list[str]] = {}
    paths = sorted(p for p in folder.rglob("*.py")
                   if p.name.startswith("test_") or p.name.endswith("_test.py")) if folder.is_dir() else []
    for path in paths:
        try:
            tree = ast.parse(files.read_regular(path, files.MAX_SOURCE_BYTES), filename=str(path))
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                for fid in _marked_ids(node.decorator_list):
                    bound.setdefault(fid, []).append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                outer = _marked_ids(node.decorator_list)
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                        for fid in dict.fromkeys(outer + _marked_ids(item.decorator_list)):
                            bound.setdefault(fid, []).append(f"{rel}::{node.name}::{item.name}")
    return bound


def _marked_ids(decorators: Sequence[Any]) -> list[str]:
    import ast

    ids: list[str] = []
    for dec in decorators:
        if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == MARKER:
            ids += [a.value.strip() for a in dec.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return ids
