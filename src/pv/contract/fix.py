"""``pv validate --fix``: the edits pv can make safely, as text edits at located keys.

Only renames that keep the file's meaning and layout: a status written under a
key pv does not read (``discharge_status:``, ``verdict:``) becomes ``status:``
in place, when the mapping has no ``status`` yet (PV025). Comments, quoting and
order are untouched because the file is edited as text, at the key node's
position, never dumped again from parsed data. The file is replaced atomically,
and only if it did not change while it was being fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pv import files
from pv.contract.load import MAX_BYTES, ContractLoadError, load_document, parse_text
from pv.contract.statuses import status_elsewhere


@dataclass(frozen=True)
class Fix:
    file: str
    line: int
    column: int
    old: str
    new: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: fixed: renamed '{self.old}' to '{self.new}'"


def fix_file(path: Path) -> list[Fix]:
    """Apply every safe fix to one contract; return what was changed (nothing for unreadable files)."""
    try:
        doc = load_document(path)
    except ContractLoadError:
        return []
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
    if not edits:
        return []
    text = doc.text
    for start, end, fix in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + fix.new + text[end:]
    parse_text(path, text)  # the edit keeps the file a readable contract (raises if not: never written)
    raw = files.read_regular(path, MAX_BYTES)
    if load_document(path).text != doc.text:
        return []  # changed underneath us: leave it to the next run
    files.replace_text(path, ("\ufeff" if raw.startswith(b"\xef\xbb\xbf") else "") + text)
    return [fix for _, _, fix in sorted(edits, key=lambda e: e[0])]
