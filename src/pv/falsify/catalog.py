"""The falsifier view of contracts: ids, statuses, live requirements, hashed files.

``pv falsify``, ``pv status`` and ``pv gate`` need the same few facts from a
contract; this reads them once from the contract loader's plain data (the fast
safe loader, never torch) into frozen values, from a file or from text (the
gate reads baseline contracts out of git).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv.contract import claims
from pv.digest import sha256_json
from pv.errors import PvError
from pv.falsify.binding import base_node_id

if TYPE_CHECKING:
    from pv.contract.load import Document


@dataclass(frozen=True)
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
    #: 1-based line of the falsifier's ``id`` in its file (1 when unknown), for annotations.
    line: int = 1

    @property
    def covered_files(self) -> tuple[str, ...]:
        """Repository files the evidence of this falsifier depends on: cited files and test files."""
        seen = dict.fromkeys(self.file_paths)
        seen.update(dict.fromkeys(node.split("::", 1)[0] for node in self.tests))
        return tuple(seen)


@dataclass(frozen=True)
class Contract:
    id: str
    version: str | None
    path: Path
    metadata_status: str | None
    falsifiers: tuple[Falsifier, ...]
    #: What the contract claims, normalised (``pv.contract.claims.claim_view``): the gate
    #: compares it with the baseline's, field by field.
    claim: Mapping[str, Any] = field(default_factory=dict)
    #: ``claim_changes``: reviewed acknowledgements of a weaker claim.
    acknowledgements: tuple[claims.Acknowledgement, ...] = ()

    @property
    def claim_digest(self) -> str:
        return claims.claim_digest(self.claim)

    def falsifier(self, fid: str) -> Falsifier | None:
        return next((f for f in self.falsifiers if f.id == fid), None)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if isinstance(v, (str, int, float)))
    return ()


#: A pytest node id inside free text: ``path/to/test_x.py::test_name`` (a class part and
#: parameters allowed).
_NODE_ID = re.compile(r"[\w./-]+\.py(?:::[A-Za-z_]\w*)+(?:\[[^\]\s]*\])?")


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


def contract_from_data(path: Path, data: Mapping[str, Any], contract_id: str,
                       doc: Document | None = None) -> Contract:
    """The falsifier view of a contract's data; ``doc`` (when given) locates each falsifier."""
    lines = {i: line for i, (line, _) in doc.item_keys("falsification_tests", "id").items()} if doc else {}
    raw_meta = data.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    version = meta.get("version")
    falsifiers: list[Falsifier] = []
    tests = data.get("falsification_tests")
    for i, raw in enumerate(tests if isinstance(tests, list) else []):
        if not isinstance(raw, dict) or raw.get("id") is None:
            continue
        raw_evidence = raw.get("algorithm_evidence")
        evidence: Mapping[str, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
        reqs = raw.get("live_requirements")
        status = raw.get("status")
        discharge = raw.get("discharge")
        falsifiers.append(Falsifier(
            id=str(raw["id"]),
            status=None if status is None else str(status),
            live_requirements=dict(reqs) if isinstance(reqs, dict) else {},
            file_paths=_strings(evidence.get("file_paths")),
            function_names=_strings(evidence.get("function_names")),
            tests=node_ids(raw.get("test")),
            claim_digest=claim_digest(raw),
            discharge_matrix=_matrix(discharge),
            discharge_artifacts=_strings(discharge.get("artifacts")) if isinstance(discharge, dict) else (),
            line=lines.get(i, 1),
        ))
    mstatus = meta.get("status")
    return Contract(
        id=contract_id,
        version=None if version is None else str(version),
        path=path,
        metadata_status=None if mstatus is None else str(mstatus),
        falsifiers=tuple(falsifiers),
        claim=claims.claim_view(data),
        acknowledgements=claims.acknowledgements(data),
    )


def load_contract(path: Path) -> Contract:
    from pv.contract.load import load_document

    doc = load_document(path)
    return contract_from_data(path, doc.data, doc.contract_id, doc)


def contract_from_text(path: Path, text: str) -> Contract:
    from pv.contract.load import parse_text

    doc = parse_text(path, text)
    return contract_from_data(path, doc.data, doc.contract_id)


def find_contract_files(paths: Iterable[Path]) -> list[Path]:
    """Contract files under ``paths`` (files as given, folders searched recursively)."""
    from pv.contract.discover import find_contracts

    return find_contracts(paths)


def load_contracts(paths: Iterable[Path]) -> list[Contract]:
    """Every contract under ``paths`` (binding registries such as ``binding.yaml`` are not
    contracts and are skipped, as ``pv validate`` treats them); duplicate ids are an error."""
    from pv.contract.load import load_document
    from pv.contract.registry import is_binding_registry

    contracts = []
    for path in find_contract_files(paths):
        doc = load_document(path)
        if not is_binding_registry(doc):
            contracts.append(contract_from_data(path, doc.data, doc.contract_id, doc))
    seen: dict[str, Path] = {}
    for c in contracts:
        if c.id in seen:
            raise PvError(f"contract id {c.id} is defined twice: {seen[c.id]} and {c.path}")
        seen[c.id] = c.path
    return contracts


def select(contracts: Iterable[Contract], contract_id: str) -> Contract:
    contracts = list(contracts)
    for c in contracts:
        if c.id == contract_id or c.path.stem == contract_id:
            return c
    known = ", ".join(sorted(c.id for c in contracts)) or "none found"
    raise PvError(f"no contract with id '{contract_id}' (known: {known})")
