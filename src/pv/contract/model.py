"""The one view of a contract that every command reads: ``Contract`` and its ``Falsifier`` s.

``pv validate`` (its rules across the set), ``pv falsify``, ``pv status``, ``pv gate``,
``pv discharge`` and ``pv acknowledge`` need the same few facts from a contract: ids,
statuses as written, the tests each falsifier names, its live requirements and the files
its evidence covers, the claim (``pv.contract.claims``) and where each of these is
written. They are read once, from a loaded ``Document`` (``from_document``), into
frozen values, so two commands can never read one contract two ways. A view is made
of any readable contract, valid or not: ``pv validate`` says what is wrong with it,
and the others refuse to act on an invalid one where acting needs it valid.
``load_contracts`` and ``select`` find the contracts a command names.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv.contract import claims
from pv.contract.discover import find_contracts
from pv.contract.findings import KeyPath, display_path
from pv.contract.ladder import PROPOSED, interpret, normalize
from pv.contract.load import Document, load_document, parse_text
from pv.contract.registry import is_binding_registry
from pv.digest import sha256_json
from pv.errors import PvError

#: (key path, 1-based line, 1-based column): where something is written in the file.
Located = tuple[KeyPath, int, int]
#: Nowhere in particular: the top of the file.
TOP: Located = ((), 1, 1)


@dataclass(frozen=True, slots=True)
class Falsifier:
    id: str
    #: As written in the contract (may be unnormalised or missing).
    status: str | None
    live_requirements: Mapping[str, Any] = field(default_factory=dict)
    #: ``algorithm_evidence.file_paths``: hashed into every record to detect stale evidence.
    file_paths: tuple[str, ...] = ()
    function_names: tuple[str, ...] = ()
    #: pytest node ids the contract's ``test:`` names (parameters stripped); only these count.
    tests: tuple[str, ...] = ()
    #: sha256 of the claim (the falsifier's entry without its status): a record made under
    #: another claim is stale.
    claim_digest: str = ""
    #: ``discharge.matrix``: targets (requirements merged onto ``live_requirements``) that each
    #: need a live pass before ``pv discharge`` may close the falsifier.
    discharge_matrix: tuple[Mapping[str, Any], ...] = ()
    #: ``discharge.artifacts``: proof files whose hashes a discharge record must cover.
    discharge_artifacts: tuple[str, ...] = ()
    #: Where its ``id`` is written (the falsifier's entry when the id is missing).
    at: Located = TOP

    @property
    def line(self) -> int:
        """1-based line of the falsifier's ``id`` in its file (1 when unknown), for annotations."""
        return self.at[1]

    @property
    def covered_files(self) -> tuple[str, ...]:
        """Repository files the evidence of this falsifier depends on: cited files and test files."""
        seen = dict.fromkeys(self.file_paths)
        seen.update(dict.fromkeys(node.split("::", 1)[0] for node in self.tests))
        return tuple(seen)


@dataclass(frozen=True)
class Contract:
    #: ``metadata.id`` when it is a non-empty string, else the file stem.
    id: str
    version: str | None
    path: Path
    #: ``metadata.status`` as written.
    metadata_status: str | None
    falsifiers: tuple[Falsifier, ...]
    #: Where ``metadata.id`` and ``metadata.status`` are written (their mapping, when absent).
    id_at: Located = TOP
    status_at: Located = TOP
    #: ``metadata.depends_on`` names, each with where it is written.
    depends_on: tuple[tuple[str, Located], ...] = ()
    #: Set by ``pv validate``: references no name in the file resolves, that a contract id may
    #: (value, where, what), and the number of errors the file has.
    open_refs: tuple[tuple[str, Located, str], ...] = ()
    errors: int = 0
    #: The text the view was read from (UTF-8, the compact form to keep), and its plain data
    #: while it is kept (``pv validate`` lets the data go: it keeps thousands of views and
    #: needs no claims); ``claim`` and ``acknowledgements`` are read from the data, or from
    #: the same text parsed again.
    source: bytes = field(default=b"", repr=False, compare=False)
    data: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def claim(self) -> Mapping[str, Any]:
        """What the contract claims, normalised (``claims.claim_view``): the gate compares it with
        the baseline's, field by field."""
        return claims.claim_view(self._source())

    @functools.cached_property
    def acknowledgements(self) -> tuple[claims.Acknowledgement, ...]:
        """``claim_changes``: reviewed acknowledgements of a weaker claim."""
        return claims.acknowledgements(self._source())

    def _source(self) -> Mapping[str, Any]:
        if self.data is not None:
            return self.data
        return parse_text(self.path, self.source.decode("utf-8")).data if self.source else {}

    @property
    def file(self) -> str:
        return str(self.path)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def claim_digest(self) -> str:
        return claims.claim_digest(self.claim)

    def falsifier(self, fid: str) -> Falsifier | None:
        return next((f for f in self.falsifiers if f.id == fid), None)

    def to_json(self) -> dict[str, Any]:
        """What ``pv validate --format json`` reports of each contract."""
        return {
            "file": display_path(self.file), "id": display_path(self.id), "status": self.metadata_status,
            "rung": interpret(self.metadata_status) if self.metadata_status else None,
            "valid": self.errors == 0,
            "falsifiers": [{"id": f.id, "status": f.status, "rung": normalize(f.status or PROPOSED)}
                           for f in self.falsifiers],
        }


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if isinstance(v, (str, int, float)))
    return ()


#: A pytest node id inside free text: ``path/to/test_x.py::test_name`` (a class part and
#: parameters allowed).
_NODE_ID = re.compile(r"[\w./-]+\.py(?:::[A-Za-z_]\w*)+(?:\[[^\]\s]*\])?")


def base_node_id(nodeid: str) -> str:
    """``path::test[param]`` -> ``path::test``: a parametrised test counts under its name."""
    return nodeid.split("[", 1)[0]


def node_ids(value: Any) -> tuple[str, ...]:
    """The node ids named by a ``test:`` field (a string or a list), parameters stripped."""
    texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] \
        if isinstance(value, list) else []
    found: dict[str, None] = {}
    for text in texts:
        for match in _NODE_ID.finditer(text):
            found[base_node_id(match.group(0))] = None
    return tuple(found)


def claim_digest(raw: Mapping[str, Any]) -> str:
    """sha256 of a falsifier entry without ``status``: what the claim says, not where it stands."""
    return sha256_json({k: v for k, v in raw.items() if k != "status"})


def _matrix(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(raw, dict):
        return ()
    targets = raw.get("matrix")
    return tuple(dict(t) for t in targets if isinstance(t, dict)) if isinstance(targets, list) else ()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _falsifier(raw: Mapping[str, Any], at: Located) -> Falsifier:
    raw_evidence = raw.get("algorithm_evidence")
    evidence: Mapping[str, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
    reqs = raw.get("live_requirements")
    discharge = raw.get("discharge")
    return Falsifier(
        id=str(raw["id"]), status=_text(raw.get("status")),
        live_requirements=dict(reqs) if isinstance(reqs, dict) else {},
        file_paths=_strings(evidence.get("file_paths")), function_names=_strings(evidence.get("function_names")),
        tests=node_ids(raw.get("test")), claim_digest=claim_digest(raw), discharge_matrix=_matrix(discharge),
        discharge_artifacts=_strings(discharge.get("artifacts")) if isinstance(discharge, dict) else (),
        at=at)


def from_document(doc: Document) -> Contract:
    """The view of one loaded contract; every location is taken from the tree the parse kept,
    so nothing is parsed twice. A falsifier needs a string ``id`` to be one."""
    data = doc.data
    raw_meta = data.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    id_marks = doc.item_keys("falsification_tests", "id")
    falsifiers = []
    tests = data.get("falsification_tests")
    for i, raw in enumerate(tests if isinstance(tests, list) else []):
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            key = ("falsification_tests", i, "id")
            line, col = id_marks.get(i) or doc.locate(key)
            falsifiers.append(_falsifier(raw, (key, line, col)))
    deps = meta.get("depends_on")
    depends_on = tuple((dep, _at(doc, ("metadata", "depends_on", i)))
                       for i, dep in enumerate(deps if isinstance(deps, list) else [])
                       if isinstance(dep, str) and dep.strip())
    return Contract(
        id=doc.contract_id, path=doc.path, version=_text(meta.get("version")),
        metadata_status=_text(meta.get("status")), falsifiers=tuple(falsifiers),
        id_at=_at(doc, ("metadata", "id")), status_at=_at(doc, ("metadata", "status")), depends_on=depends_on,
        source=doc.text.encode("utf-8"), data=data)


def _at(doc: Document, path: KeyPath) -> Located:
    return (path, *doc.locate(path))


def load_contract(path: Path) -> Contract:
    """The view of the contract file at ``path`` (``ContractLoadError`` when it cannot be read)."""
    return from_document(load_document(path))


def contract_from_text(path: Path, text: str) -> Contract:
    """The view of a contract's text, as if read from ``path`` (the gate reads baselines out of git)."""
    return from_document(parse_text(path, text))


def load_contracts(paths: Iterable[str | os.PathLike[str]]) -> list[Contract]:
    """Every contract under ``paths`` (files as given, folders searched). Binding registries such as
    ``binding.yaml`` are not contracts and are skipped, as ``pv validate`` treats them; an id
    defined twice is an error."""
    contracts = []
    for path in find_contracts(paths):
        doc = load_document(path)
        if not is_binding_registry(doc):
            contracts.append(from_document(doc))
    seen: dict[str, Path] = {}
    for c in contracts:
        if c.id in seen:
            raise PvError(f"contract id {c.id} is defined twice: {seen[c.id]} and {c.path}")
        seen[c.id] = c.path
    return contracts


def select(contracts: Iterable[Contract], contract_id: str) -> Contract:
    """The contract whose id or file stem is ``contract_id``; one line naming the known ids if none is."""
    contracts = list(contracts)
    for c in contracts:
        if c.id == contract_id or c.path.stem == contract_id:
            return c
    known = ", ".join(sorted(c.id for c in contracts)) or "none found"
    raise PvError(f"no contract with id '{contract_id}' (known: {known})")


__all__ = ["TOP", "Contract", "Falsifier", "Located", "base_node_id", "claim_digest", "contract_from_text",
           "from_document", "load_contract", "load_contracts", "node_ids", "select"]
