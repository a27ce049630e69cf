"""What a contract set leaves uncovered (``pv coverage``), and which tests bind which falsifier.

Per contract:

- obligations no falsifier enforces: a proof obligation whose id no falsifier
  cites (``algorithm_evidence.invariants_enforced`` or ``binds_to``); an
  obligation without an id cannot be cited at all;
- falsifiers with no test: no ``test:`` field, or none of the tests it names
  exists and carries ``@pytest.mark.falsifies("<its id>")`` (pv falsify counts
  only tests that do both);
- tests with no falsifier: a test marked ``falsifies("<id>")`` for an id no
  contract defines, or for a falsifier whose ``test:`` does not name it. The first
  kind (an orphan marker) is an error, not a gap: ``pv falsify`` refuses every
  contract while one is there.

Test files are read with ``ast`` (nothing is imported or run).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import files
from pv.contract.discover import find_contracts
from pv.contract.graph import load_set
from pv.contract.load import Document
from pv.contract.references import bare
from pv.contract.rulebase import close_match, falsifiers, obligations, strings
from pv.repo import repo_root

MARKER = "falsifies"
#: ``path/test_x.py::test_name`` or ``path/test_x.py::Class::test_name``, parameters stripped.
NODE_ID = re.compile(r"[\w./-]+\.py(?:::[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class MarkedTest:
    node_id: str  # relative to the repository root, with '/'
    falsifiers: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class ContractCoverage:
    id: str
    file: str
    obligations: int
    unenforced: tuple[str, ...]  # obligation ids (or "proof_obligations[i] (no id)")
    falsifiers: int
    untested: tuple[tuple[str, str], ...]  # (falsifier id, why)
    bound: dict[str, tuple[str, ...]] = field(default_factory=dict)  # falsifier -> bound node ids

    @property
    def complete(self) -> bool:
        return not self.unenforced and not self.untested


@dataclass(frozen=True)
class OrphanMarker:
    """A test marked for an id that no contract defines: ``pv falsify`` refuses every contract
    while it is there, so ``pv coverage`` reports it as an error."""

    test: MarkedTest
    falsifier: str
    #: The known falsifier id closest to ``falsifier`` (a typo?), or None.
    closest: str | None

    @property
    def why(self) -> str:
        hint = f" (did you mean {self.closest}?)" if self.closest else ""
        return f"marked for {self.falsifier}, which no contract defines{hint}"

    def message(self) -> str:
        return (f"test {self.test.node_id} (line {self.test.line}) is {self.why}; "
                "pv falsify refuses to run any contract while it is")


@dataclass(frozen=True)
class Coverage:
    contracts: tuple[ContractCoverage, ...]
    orphans: tuple[tuple[MarkedTest, str], ...]  # (test, why)
    #: Markers naming an id no contract defines: errors, not gaps.
    orphan_markers: tuple[OrphanMarker, ...] = ()
    #: Files that could not be read as contracts, each as its finding's one line.
    skipped: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.contracts) and not self.orphans

    def failed(self, strict: bool = False) -> bool:
        """An orphan marker always fails (pv falsify refuses every contract while it is there);
        with ``strict``, anything uncovered does."""
        return bool(self.orphan_markers) or (strict and not self.complete)

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "contracts": [{"id": c.id, "file": c.file, "obligations": c.obligations,
                           "unenforced_obligations": list(c.unenforced), "falsifiers": c.falsifiers,
                           "untested_falsifiers": [{"id": f, "why": w} for f, w in c.untested],
                           "bound_tests": {f: list(n) for f, n in c.bound.items()}}
                          for c in self.contracts],
            "tests_without_falsifier": [{"test": t.node_id, "line": t.line, "why": w} for t, w in self.orphans],
            "orphan_markers": [{"test": m.test.node_id, "line": m.test.line, "id": m.falsifier,
                                "closest": m.closest} for m in self.orphan_markers],
            "skipped": list(self.skipped),
        }


def _marker_ids(decorator: ast.expr) -> list[str] | None:
    """The ids of a ``pytest.mark.falsifies("ID", ...)`` decorator, or None if it is another one."""
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) \
        else None
    if name != MARKER:
        return None
    return [a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def marked_tests(folders: Iterable[Path], root: Path) -> list[MarkedTest]:
    """Every test function or method marked ``falsifies`` under ``folders`` (``test_*.py``)."""
    found: list[MarkedTest] = []
    for folder in folders:
        paths = [folder] if folder.is_file() else sorted(folder.rglob("test_*.py"))
        for path in paths:
            try:
                tree = ast.parse(files.read_text(path))
            except (SyntaxError, ValueError, OSError, RecursionError):
                continue
            rel = Path(os.path.relpath(path, root)).as_posix()
            found.extend(_walk(tree.body, rel, (), []))
    return found


def _walk(body: list[ast.stmt], rel: str, prefix: tuple[str, ...],
          inherited: list[str]) -> Iterator[MarkedTest]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            ids = [i for d in node.decorator_list for i in (_marker_ids(d) or [])]
            yield from _walk(node.body, rel, prefix + (node.name,), inherited + ids)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            ids = inherited + [i for d in node.decorator_list for i in (_marker_ids(d) or [])]
            if ids:
                yield MarkedTest("::".join((rel, *prefix, node.name)), tuple(dict.fromkeys(ids)),
                                 node.lineno)


def named_tests(test_field: object) -> tuple[str, ...]:
    """The node ids a falsifier's ``test:`` names (a string or a list, free text allowed)."""
    out: dict[str, None] = {}
    for _, text in strings(test_field):
        for match in NODE_ID.finditer(text):
            out[match.group(0)] = None
    return tuple(out)


def contract_coverage(doc: Document, tests: list[MarkedTest]) -> ContractCoverage:
    cited: set[str] = set()
    for _, test in falsifiers(doc):
        evidence = test.get("algorithm_evidence")
        enforced = evidence.get("invariants_enforced") if isinstance(evidence, dict) else None
        cited.update(bare(t) for _, t in strings(enforced))
        cited.update(bare(t) for _, t in strings(test.get("binds_to")))
    unenforced: list[str] = []
    count = 0
    for i, ob in obligations(doc):
        count += 1
        oid = ob.get("id")
        if not isinstance(oid, str):
            unenforced.append(f"proof_obligations[{i}] (no id, so no falsifier can cite it)")
        elif oid not in cited:
            unenforced.append(oid)
    by_node = {t.node_id: t for t in tests}
    untested: list[tuple[str, str]] = []
    bound: dict[str, tuple[str, ...]] = {}
    n_falsifiers = 0
    for _, test in falsifiers(doc):
        fid = test.get("id")
        if not isinstance(fid, str):
            continue
        n_falsifiers += 1
        named = named_tests(test.get("test"))
        ok = tuple(n for n in named if n in by_node and fid in by_node[n].falsifiers)
        bound[fid] = ok
        if ok:
            continue
        if "test" not in test:
            why = "names no test"
        elif not named:
            why = "its 'test' names no pytest node id (path/test_x.py::test_name)"
        elif not any(n in by_node for n in named):
            why = f"no test named in 'test' carries a falsifies marker: {', '.join(named)}"
        else:
            why = f"the tests named in 'test' are marked for other falsifiers: {', '.join(named)}"
        untested.append((fid, why))
    return ContractCoverage(doc.contract_id, str(doc.path), count, tuple(unenforced), n_falsifiers,
                            tuple(untested), bound)


def coverage_of(paths: Iterable[str | os.PathLike[str]] = (), tests: Iterable[Path] = (),
                root: Path | None = None) -> Coverage:
    """``pv coverage``: the contracts under ``paths`` (default ``<repo>/contracts``) against the
    marked tests under ``tests`` (default ``<repo>/falsifiers`` when it exists)."""
    root = root or repo_root()
    docs, skipped = load_set(find_contracts(list(paths) or [root / "contracts"]))
    folders = list(tests) or [p for p in [root / "falsifiers"] if p.is_dir()]
    return coverage(docs, marked_tests(folders, root), skipped)


def coverage(docs: Iterable[Document], tests: list[MarkedTest], skipped: Iterable[str] = ()) -> Coverage:
    docs = list(docs)
    per = [contract_coverage(doc, tests) for doc in docs]
    defined = {fid: c for c in per for fid in c.bound}
    orphans: list[tuple[MarkedTest, str]] = []
    markers: list[OrphanMarker] = []
    known = frozenset(defined)
    for t in tests:
        for fid in t.falsifiers:
            owner = defined.get(fid)
            if owner is None:
                marker = OrphanMarker(t, fid, close_match(fid, known, 0.8) if known else None)
                markers.append(marker)
                orphans.append((t, marker.why))
            elif t.node_id not in owner.bound[fid]:
                why = (f"marked for {fid}, but {owner.id}'s 'test' does not name it, so pv "
                       "falsify does not count it")
                orphans.append((t, why))
    return Coverage(tuple(per), tuple(orphans), tuple(markers), tuple(skipped))
