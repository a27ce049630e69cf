"""Reading data files that someone else wrote, with every size bounded up front.

Capture manifests, tolerance configs, mapping files and model ``config.json``
files arrive with a repository or a download; pv treats them as hostile. Each
reader here refuses, before it builds anything big, what no honest file needs:

* anything but a regular file, more bytes than the caller's bound: the one
  reader, ``pv.files.read_regular``, decides (a FIFO would block forever, a
  device never ends, a ``/proc`` file changes while read);
* nesting deeper than ``max_depth`` and more than ``max_items`` values in all
  (each reader passes the shape its format needs);
* integer literals longer than :data:`MAX_INT_CHARS` characters: no data value
  needs more, and a tolerance of 400 digits is a float overflow waiting;
* for YAML, everything the one YAML loader (``pv.safeyaml``) refuses, with its
  bounds: aliases, alias expansion, depth, tags that build something other than
  plain data, timestamps kept as text;
* a mapping (JSON object) that names the same key twice. Both parsers would
  keep the last value silently, so a repeated ``cosine:`` in a tolerance file
  would change a stage's tolerance with nothing said.

Every refusal is a :class:`DataFileError` (a :class:`pv.errors.PvError`) whose
message is one line naming the file and what is wrong. Contracts are read by
the same reader and loader, and reported as located findings
(``pv.contract.load``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from pv import files, safeyaml
from pv.errors import PvError, brief, one_line, show_path
from pv.safeyaml import duplicate_key_message

#: Longest integer literal accepted in a data file (see the module docstring).
MAX_INT_CHARS = 100
#: YAML aliases allowed per file: the one loader's bound.
MAX_ALIASES = safeyaml.MAX_ALIASES
#: Default bounds; each reader passes its own where they differ.
MAX_DEPTH = 32
MAX_ITEMS = 1_000_000
#: Pseudo-filesystems refused by path (``pv.files`` decides).
PSEUDO_ROOTS = files.PSEUDO_ROOTS


class DataFileError(PvError):
    """A data file that is unreadable, too big, or not shaped as plain bounded data."""


def _refusal(path: str | os.PathLike[str], what: str, exc: BaseException) -> DataFileError:
    """The one-line words for why ``files`` would not read ``path``."""
    shown = show_path(path)
    if isinstance(exc, files.PseudoFileError):
        return DataFileError(f"{shown}: {what} is a /proc or /sys path, not a data file")
    if isinstance(exc, files.NotRegularFileError):
        return DataFileError(f"{shown}: {what} is not a regular file (a FIFO, device, socket or folder)")
    if isinstance(exc, files.TooLargeError):
        return DataFileError(f"{shown}: {what} is larger than {exc.limit} bytes; refused")
    if isinstance(exc, FileNotFoundError):
        return DataFileError(f"{shown}: cannot read {what}: no such file")
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return DataFileError(f"{shown}: cannot read {what}: {reason}")


def open_data(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """Open a regular data file for binary reading, or raise ``DataFileError``.

    ``what`` names the file's role in messages ("APRT file", "manifest", ...).
    """
    try:
        return files.open_regular(path)
    except (OSError, ValueError) as exc:
        raise _refusal(path, what, exc) from None


def read_data(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    """The bytes of a regular data file of at most ``limit`` bytes."""
    try:
        return files.read_regular(path, limit)
    except (OSError, ValueError) as exc:
        raise _refusal(path, what, exc) from None


def _text(path: str | os.PathLike[str], what: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{show_path(path)}: {what} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None


def check_tree(data: Any, where: str, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Refuse nesting deeper than ``max_depth`` or more than ``max_items`` values.

    Iterative, and each container is counted once however often YAML aliases
    share it, so neither a deep nor a self-referencing value can recurse here.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(data, 1)]
    items = 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > max_items:
            raise DataFileError(f"{where}: more than {max_items} values; refused")
        if isinstance(value, (dict, list)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if depth > max_depth:
                raise DataFileError(f"{where}: nested more than {max_depth} deep; refused")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
            if isinstance(value, dict):
                stack.extend((key, depth + 1) for key in value)


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise ValueError(f"integer literal of {len(text)} digits (at most {MAX_INT_CHARS})")
    return int(text)


class _RepeatedKey(Exception):
    """Raised from the JSON object hook; carries the key. Located afterwards."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return obj


#: What matters to find a JSON object's keys: strings, brackets and commas.
_JSON_TOKEN = re.compile(r'["{}\[\],]')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _find_repeated_key(text: str) -> tuple[str, int, int] | None:
    """(key, offset of its second use, offset of its first) in the first object that
    repeats a key, or None. Only called on text ``json.loads`` already read up to the
    repeat, so a flat scan of strings and brackets is enough; iterative at any depth.
    """
    stack: list[dict[str, int] | None] = []  # per open bracket: an object's keys, or None
    expect_key = False
    token = _JSON_TOKEN.search(text)
    while token is not None:
        pos, char = token.start(), token.group()
        end = pos + 1
        if char == '"':
            string = _JSON_STRING.match(text, pos)
            if string is None:
                return None
            end = string.end()
            top = stack[-1] if stack else None
            if top is not None and expect_key:
                key = json.loads(string.group())
                first = top.setdefault(key, pos)
                if first != pos:
                    return key, pos, first
            expect_key = False
        elif char in "{[":
            stack.append({} if char == "{" else None)
            expect_key = char == "{"
        elif char in "}]":
            if stack:
                stack.pop()
            expect_key = False
        else:  # a comma: a key follows inside an object
            expect_key = bool(stack) and stack[-1] is not None
        token = _JSON_TOKEN.search(text, end)
    return None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def parse_json(text: str, where: str, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """``json.loads`` with integer length, depth and size bounds and unique keys;
    ``where`` names the source."""
    try:
        data = json.loads(text, parse_int=_bounded_int, object_pairs_hook=_unique_object)
    except _RepeatedKey as exc:
        hit = _find_repeated_key(text)
        if hit is None:
            raise DataFileError(f"{where}: {duplicate_key_message(exc.args[0], None)}") from None
        key, again, first = hit
        line, col = _line_col(text, again)
        message = duplicate_key_message(key, _line_col(text, first)[0])
        raise DataFileError(f"{where}:{line}:{col}: {message}") from None
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise DataFileError(f"{where}: nested more than {max_depth} deep; refused") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise DataFileError(f"{where}: invalid JSON: {one_line(str(exc))}") from None
    check_tree(data, where, max_depth=max_depth, max_items=max_items)
    return data


def load_json(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> Any:
    """Read and parse a bounded JSON data file (see the module docstring)."""
    text = _text(path, what, read_data(path, what, limit))
    return parse_json(text, show_path(path), max_depth=max_depth, max_items=max_items)


# --------------------------------------------------------------------------- YAML

#: What a data file's reader says for each bound the YAML loader found exceeded.
_REFUSED = {
    safeyaml.DEPTH: "nested more than {max_depth} deep; refused",
    safeyaml.ALIASES: f"more than {safeyaml.MAX_ALIASES} YAML aliases; refused",
    safeyaml.EXPANSION: f"more than {safeyaml.MAX_EXPANDED_NODES} values once aliases expand; refused",
}


def _mark(exc: Any) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _check_int_literals(root: yaml.Node, where: str) -> None:
    """Refuse integer literals longer than MAX_INT_CHARS (the loader allows longer ones,
    which contracts may hold); each node shared by aliases looked at once."""
    for node in safeyaml.walk_nodes(root):
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int" \
                and len(node.value) > MAX_INT_CHARS:
            mark = node.start_mark
            raise DataFileError(f"{where}:{mark.line + 1}:{mark.column + 1}: invalid YAML: integer literal "
                                f"of {len(node.value)} characters (at most {MAX_INT_CHARS})")


def parse_yaml(text: str, where: str, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """One YAML document as plain bounded data (``pv.safeyaml``; no code runs)."""
    try:
        data, root = safeyaml.load(text)
    except safeyaml.Refused as exc:
        problem = _REFUSED.get(exc.kind, exc.problem).format(max_depth=max_depth)
        raise DataFileError(f"{where}{_mark(exc)}: {problem}") from None
    except safeyaml.DuplicateKeyError as exc:
        raise DataFileError(f"{where}{_mark(exc)}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        if "maximum nesting depth" in str(problem):
            # libyaml >= 0.2.5 stops deep flow nesting in its scanner, ahead of the event check.
            raise DataFileError(f"{where}{_mark(exc)}: nested more than {max_depth} deep; refused") from None
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context else str(problem)
        raise DataFileError(f"{where}{_mark(exc)}: invalid YAML: {one_line(detail)}") from None
    except (RecursionError, MemoryError):
        raise DataFileError(f"{where}: nested too deeply to parse; refused") from None
    if root is not None:
        _check_int_literals(root, where)
    check_tree(data, where, max_depth=max_depth, max_items=max_items)
    return data


def load_data(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> Any:
    """A JSON (``.json``) or YAML (anything else) data file, bounded; None when empty."""
    text = _text(path, what, read_data(path, what, limit))
    where = show_path(path)
    if Path(path).suffix.lower() == ".json":
        return parse_json(text, where, max_depth=max_depth, max_items=max_items)
    return parse_yaml(text, where, max_depth=max_depth, max_items=max_items)


__all__ = ["MAX_DEPTH", "MAX_INT_CHARS", "MAX_ITEMS", "DataFileError", "brief", "check_tree",
           "duplicate_key_message", "load_data", "load_json", "one_line", "open_data", "parse_json",
           "parse_yaml", "read_data", "show_path"]
