"""Rewrite falsifier statuses inside a contract file, touching nothing else.

A contract is hand-written prose with comments and a chosen layout; a status
update must not reformat it. Rather than dump a re-serialised document, this
edits the text: the YAML is composed into nodes (which carry the exact
character span of every scalar), each ``status`` scalar is replaced in place
(keeping its quote style), and a missing ``status`` is inserted on its own
line right after the falsifier's ``id`` at the same indentation. Every other
byte, line ending and comment stays as it was. The result is parsed again and
must equal the original data except for the intended statuses before it
replaces the file atomically (temp file, fsync, rename): a crash leaves the
old file or the new one, never a mix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pv import files, safeyaml
from pv.contract.load import MAX_BYTES as MAX_CONTRACT_BYTES
from pv.errors import PvError

_SAFE_STATUS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
#: The ``Change.falsifier_id`` of a ``metadata.status`` update (no falsifier id has this form).
METADATA = "<metadata>"


class RewriteError(PvError):
    """The contract cannot be rewritten safely; the file is left untouched."""


@dataclass(frozen=True)
class Change:
    falsifier_id: str
    old: str | None
    new: str


def _scalar(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _get(mapping: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in mapping.value:
        if _scalar(k) == key:
            return k, v
    return None


def _falsifier_nodes(root: yaml.Node | None, where: str) -> list[yaml.MappingNode]:
    if not isinstance(root, yaml.MappingNode):
        raise RewriteError(f"{where}: the document is not a mapping")
    entry = _get(root, "falsification_tests")
    if entry is None:
        return []
    seq = entry[1]
    if not isinstance(seq, yaml.SequenceNode):
        raise RewriteError(f"{where}: falsification_tests is not a list")
    return [n for n in seq.value if isinstance(n, yaml.MappingNode)]


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _scalar_edit(value: yaml.Node, new: str, what: str, where: str) -> tuple[int, int, str]:
    if not isinstance(value, yaml.ScalarNode):
        raise RewriteError(f"{where}: status of {what} is not a scalar")
    quote = value.style if value.style in ("'", '"') else ""
    return (value.start_mark.index, value.end_mark.index, f"{quote}{new}{quote}")


def _check_status(new: str, where: str) -> None:
    if not new or not set(new) <= _SAFE_STATUS:
        raise RewriteError(f"{where}: refusing to write status {new!r}")


def _plan_edits(text: str, statuses: Mapping[str, str], where: str,
                metadata_status: str | None = None) -> tuple[list[tuple[int, int, str]], list[Change]]:
    try:
        root = safeyaml.compose(text)
    except yaml.YAMLError as exc:
        raise RewriteError(f"{where}: not valid YAML: {exc}".splitlines()[0]) from None
    edits: list[tuple[int, int, str]] = []
    changes: list[Change] = []
    if metadata_status is not None:
        _check_status(metadata_status, where)
        meta = _get(root, "metadata") if isinstance(root, yaml.MappingNode) else None
        entry = _get(meta[1], "status") if meta and isinstance(meta[1], yaml.MappingNode) else None
        if entry is None:
            raise RewriteError(f"{where}: metadata has no status to update")
        if _scalar(entry[1]) != metadata_status:
            edits.append(_scalar_edit(entry[1], metadata_status, "metadata", where))
            changes.append(Change(METADATA, _scalar(entry[1]), metadata_status))
    seen: set[str] = set()
    nl = _newline(text)
    for fnode in _falsifier_nodes(root, where):
        id_entry = _get(fnode, "id")
        fid = _scalar(id_entry[1]) if id_entry else None
        if fid is None or fid not in statuses:
            continue
        if fid in seen:
            raise RewriteError(f"{where}: falsifier id {fid} appears twice")
        seen.add(fid)
        new = statuses[fid]
        _check_status(new, where)
        status_entry = _get(fnode, "status")
        if status_entry is not None:
            old = _scalar(status_entry[1])
            if old == new:
                continue
            edits.append(_scalar_edit(status_entry[1], new, fid, where))
            changes.append(Change(fid, old, new))
            continue
        assert id_entry is not None
        if fnode.flow_style:
            close = fnode.end_mark.index - 1
            if text[close:close + 1] != "}":
                raise RewriteError(f"{where}: cannot place a status in the flow mapping of {fid}")
            edits.append((close, close, f", status: {new}"))
        else:
            key_node, id_value = id_entry
            line_end = text.find("\n", id_value.end_mark.index)
            if line_end < 0:
                at, prefix = len(text), nl
            else:
                at, prefix = line_end + 1, ""
            indent = " " * key_node.start_mark.column
            edits.append((at, at, f"{prefix}{indent}status: {new}{nl}"))
        changes.append(Change(fid, None, new))
    missing = sorted(set(statuses) - seen)
    if missing:
        raise RewriteError(f"{where}: no falsifier with id {', '.join(missing)}")
    return edits, changes


def _statuses_of(data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in (data or {}).get("falsification_tests") or []:
        if isinstance(f, dict) and "id" in f:
            out[str(f["id"])] = f.get("status")
    return out


def _strip_statuses(data: Any, ids: set[str]) -> Any:
    if not isinstance(data, dict):
        return data
    copy = dict(data)
    if METADATA in ids and isinstance(copy.get("metadata"), dict):
        copy["metadata"] = {k: v for k, v in copy["metadata"].items() if k != "status"}
    tests = []
    for f in copy.get("falsification_tests") or []:
        if isinstance(f, dict) and str(f.get("id")) in ids:
            f = {k: v for k, v in f.items() if k != "status"}
        tests.append(f)
    if "falsification_tests" in copy:
        copy["falsification_tests"] = tests
    return copy


def _parse(text: str, where: str) -> Any:
    """The contract's data through pv's bounded loader (no alias bombs, no recursive aliases)."""
    from pv.contract.load import parse_text

    try:
        return parse_text(Path(where), text).data
    except PvError as exc:
        raise RewriteError(f"refusing to rewrite: {exc}") from None


def rewrite_text(text: str, statuses: Mapping[str, str], where: str = "<contract>",
                 metadata_status: str | None = None) -> tuple[str, list[Change]]:
    """The contract text with the given falsifier (and metadata) statuses, and what changed.

    A byte-order mark is set aside while the edits are planned: the loader's marks do not
    count it, and it is put back in front of the result.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    out, changes = _rewrite(text[len(bom):], statuses, where, metadata_status)
    return bom + out, changes


def _rewrite(text: str, statuses: Mapping[str, str], where: str,
             metadata_status: str | None) -> tuple[str, list[Change]]:
    before = _parse(text, where)  # refuses what pv's loader refuses before any node is walked
    edits, changes = _plan_edits(text, statuses, where, metadata_status)
    out = text
    for start, end, repl in sorted(edits, reverse=True):
        out = out[:start] + repl + out[end:]
    if changes:
        after = _parse(out, where)
        got = _statuses_of(after)
        if isinstance(after, dict) and isinstance(after.get("metadata"), dict):
            got[METADATA] = after["metadata"].get("status")
        wrong = [c.falsifier_id for c in changes if got.get(c.falsifier_id) != c.new]
        ids = {c.falsifier_id for c in changes}
        if wrong or _strip_statuses(before, ids) != _strip_statuses(after, ids):
            raise RewriteError(f"{where}: a status edit would change more than the status; file left as is")
    return out, changes


def rewrite_statuses(path: str | os.PathLike[str], statuses: Mapping[str, str],
                     metadata_status: str | None = None) -> list[Change]:
    """Set falsifier statuses (and ``metadata.status``) in the contract at ``path`` in place.

    Returns the changes made; ``metadata.status`` changes carry the id ``METADATA``.
    """
    p = Path(path)
    try:
        text = files.read_regular(p, MAX_CONTRACT_BYTES).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise RewriteError(f"{p}: cannot read contract: {exc}") from None
    new_text, changes = rewrite_text(text, statuses, str(p), metadata_status)
    if changes:
        files.replace_bytes(p, new_text.encode("utf-8"))
    return changes
