"""``pv validate --fix``: the edits pv can make safely, as text edits at located keys.

Only renames that keep the file's meaning and layout: a status written under a
key pv does not read (``discharge_status:``, ``verdict:``) becomes ``status:``
in place, when the mapping has no ``status`` yet (PV025). Comments, quoting and
order are untouched because the file is edited as text, at the key node's
position, never dumped again from parsed data. The file is replaced atomically,
under the lock ``pv falsify`` takes on the contract, and only if it did not
change while it was being fixed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.contract.discover import find_contracts
from pv.contract.load import MAX_BYTES, ContractLoadError, Document, load_document, parse_text
from pv.contract.statuses import status_elsewhere
from pv.repo import repo_root


@dataclass(frozen=True)
class Fix:
    file: str
    line: int
    column: int
    old: str
    new: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: fixed: renamed '{self.old}' to '{self.new}'"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "old": self.old, "new": self.new}


def _plan(path: Path) -> tuple[Document, list[tuple[int, int, Fix]]] | None:
    """The loaded contract and its safe edits, or None when there is nothing to fix (or it is unreadable)."""
    try:
        doc = load_document(path)
    except ContractLoadError:
        return None
    edits: list[tuple[int, int, Fix]] = []
    for key_path, _canonical, _value, renamable in status_elsewhere(doc):
        if not renamable:
            continue
        node = doc.key_node(key_path)
        if node is None or node.style not in (None, "", "'", '"'):
            continue
        start, end = node.start_mark.index, node.end_mark.index
        edits.append((start, end, Fix(str(path), node.start_mark.line + 1,
                                      node.start_mark.column + 1, str(key_path[-1]), "status")))
    return (doc, edits) if edits else None


def fix_file(path: Path, evidence_dir: Path | None = None) -> list[Fix]:
    """Apply every safe fix to one contract; return what was changed (nothing for unreadable files).

    The rewrite holds the contract's lock (``<evidence>/<contract id>/.lock``, default evidence
    folder: ``evidence/`` of the repository holding the contract), the one ``pv falsify`` and
    ``pv discharge`` take while they rewrite statuses: without it, a fix and a status update
    made at the same moment would each write the file as it read it, and one of them would
    be lost. The lock is taken only when there is something to fix, and the contract is read
    again under it.
    """
    planned = _plan(path)
    if planned is None:
        return []
    evidence = evidence_dir or repo_root(path.resolve().parent) / "evidence"
    with files.contract_locked(evidence, planned[0].contract_id):
        planned = _plan(path)
        if planned is None:
            return []
        doc, edits = planned
        text = doc.text
        for start, end, fix in sorted(edits, key=lambda e: e[0], reverse=True):
            text = text[:start] + fix.new + text[end:]
        parse_text(path, text)  # the edit keeps the file a readable contract (raises if not: never written)
        raw = files.read_regular(path, MAX_BYTES)
        if load_document(path).text != doc.text:
            return []  # changed underneath us by something that takes no lock: leave it to the next run
        files.replace_text(path, ("\ufeff" if raw.startswith(b"\xef\xbb\xbf") else "") + text)
    return [fix for _, _, fix in sorted(edits, key=lambda e: e[0])]


def fix_paths(paths: Iterable[str | os.PathLike[str]], evidence_dir: Path | None = None) -> list[Fix]:
    """``pv validate --fix``: every safe fix in every contract under ``paths``."""
    return [fix for path in find_contracts(paths) for fix in fix_file(Path(path), evidence_dir)]
