"""Reading data files that someone else wrote, with every size bounded up front.

Capture manifests, tolerance configs and model ``config.json`` files arrive
with a repository or a download; pv treats them as hostile. Each reader here
refuses, before it builds anything big, what no honest file needs:

* anything but a regular file (a FIFO would block forever, a device never
  ends): refused on the opened descriptor; and ``/proc`` and ``/sys`` files,
  which claim to be regular but report size 0 and may block or change while
  read: refused by resolved path;
* more bytes than the caller's bound (read with ``limit + 1``, never the
  size a file claims);
* nesting deeper than ``max_depth`` and more than ``max_items`` values in all;
* integer literals longer than :data:`MAX_INT_CHARS` characters (Python will
  not turn more than 4300 digits into an ``int`` or back into text, and
  sexagesimal or hex literals grow without that limit);
* YAML aliases past :data:`MAX_ALIASES` or expanding past ``max_items``
  nodes, and YAML tags that build something other than plain data;
* a mapping (JSON object) that names the same key twice. Both parsers would
  keep the last value silently, so a repeated ``cosine:`` in a tolerance file
  would change a stage's tolerance with nothing said. The contract loader
  refuses them through :func:`refuse_duplicate_keys` too.

Every refusal is a :class:`pv.errors.PvError` whose message is one line
naming the file and what is wrong. Contracts have their own loader
(``pv.contract.load``), which also locates findings by line.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from pv import files
from pv.errors import PvError

#: Longest integer literal accepted in a data file (see the module docstring).
MAX_INT_CHARS = 100
#: YAML aliases allowed per file; real tolerance files use a few, if any.
MAX_ALIASES = 256
#: Default bounds; each reader passes its own where they differ.
MAX_DEPTH = 32
MAX_ITEMS = 1_000_000
#: Pseudo-filesystems whose "regular" files are not data (size 0, generated on read,
#: may block). Devices anywhere are refused by their file type instead.
PSEUDO_ROOTS = ("/proc", "/sys")


class DataFileError(PvError):
    """A data file that is unreadable, too big, or not shaped as plain bounded data."""


def brief(value: Any, limit: int = 60) -> str:
    """A short one-line ``repr`` for messages, safe on any value.

    A huge integer cannot be turned into text at all and a deep list recurses;
    neither may turn an error message into a second error.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple)):
        if len(value) <= 8 and not any(isinstance(x, (list, dict, tuple)) for x in value):
            inner = ", ".join(brief(x, limit) for x in value)
            text = f"[{inner}]"
            return text if len(text) <= limit else text[: limit - 4] + "...]"
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, dict):
        return f"<{type(value).__name__} of {len(value)} items>" if value else "{}"
    try:
        text = repr(value)
    except (ValueError, RecursionError, MemoryError):
        return f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line (runs of whitespace become one space), clipped to ``limit``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_path(path: str | os.PathLike[str]) -> str:
    """A path as one printable line (newlines and undecodable bytes escaped)."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace").replace(
        "\n", "\\n"
    ).replace("\r", "\\r").replace("\t", "\\t")


def _is_pseudo(path: str | os.PathLike[str]) -> bool:
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    return any(real == root or real.startswith(root + os.sep) for root in PSEUDO_ROOTS)


def open_data(path: str | os.PathLike[str], what: str) -> Any:
    """Open a regular data file for binary reading, or raise ``DataFileError``.

    ``what`` names the file's role in messages ("APRT file", "manifest", ...).
    """
    shown = show_path(path)
    if _is_pseudo(path):
        raise DataFileError(f"{shown}: {what} is a /proc or /sys path, not a data file")
    try:
        return files.open_regular(path)
    except files.NotRegularFileError:
        raise DataFileError(
            f"{shown}: {what} is not a regular file (a FIFO, device, socket or folder)"
        ) from None
    except FileNotFoundError:
        raise DataFileError(f"{shown}: cannot read {what}: no such file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DataFileError(f"{shown}: cannot read {what}: {reason}") from None


def read_data(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    """The bytes of a regular data file of at most ``limit`` bytes."""
    with open_data(path, what) as f:
        try:
            # In pieces: ``read(limit + 1)`` would allocate the whole bound for a small file.
            chunks: list[bytes] = []
            total = 0
            while total <= limit:
                block = f.read(min(1 << 20, limit + 1 - total))
                if not block:
                    break
                chunks.append(block)
                total += len(block)
            data = b"".join(chunks)
        except OSError as exc:
            raise DataFileError(
                f"{show_path(path)}: cannot read {what}: {exc.strerror or type(exc).__name__}"
            ) from None
    if len(data) > limit:
        raise DataFileError(f"{show_path(path)}: {what} is larger than {limit} bytes; refused")
    return data


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


def duplicate_key_message(key: Any, first_line: int | None) -> str:
    """The words for a repeated mapping key, the same for JSON, YAML and contracts."""
    where = f" (first at line {first_line})" if first_line is not None else ""
    return f"duplicate key {brief(key)}{where}; a key may appear only once in a mapping"


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

_YAML_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ValueProblem(yaml.constructor.ConstructorError):
    """A scalar whose text does not fit its tag (``!!float x``) or pv's bounds."""


class _DataLoader(_YAML_BASE):  # type: ignore[misc]
    """libyaml's safe loader, limited to plain data with bounded scalars."""


def _scalar_text(node: Any) -> str:
    text = str(getattr(node, "value", "..."))
    return text if len(text) <= 40 else text[:37] + "..."


def _int_constructor(loader: Any, node: Any) -> int:
    text = str(node.value)
    if len(text) > MAX_INT_CHARS:
        raise _ValueProblem(
            None, None, f"integer literal of {len(text)} characters (at most {MAX_INT_CHARS})",
            node.start_mark,
        )
    try:
        value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except (ValueError, TypeError, OverflowError, IndexError):
        raise _ValueProblem(None, None, f"{_scalar_text(node)!r} is not a valid !!int", node.start_mark) from None
    if value.bit_length() > 4 * MAX_INT_CHARS:  # sexagesimal literals grow fast
        raise _ValueProblem(None, None, "integer too large", node.start_mark)
    return value


def _checked(kind: str, construct: Any) -> Any:
    def run(loader: Any, node: Any) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError):
            raise _ValueProblem(
                None, None, f"{_scalar_text(node)!r} is not a valid !!{kind}", node.start_mark
            ) from None

    return run


def _refuse(loader: Any, node: Any) -> Any:
    name = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    raise _ValueProblem(None, None, f"tag {name} is not plain data; refused", node.start_mark)


def _timestamp_as_text(loader: Any, node: Any) -> str:
    return str(loader.construct_scalar(node))


_DataLoader.add_constructor("tag:yaml.org,2002:int", _int_constructor)
for _kind, _fn in (
    ("float", yaml.constructor.SafeConstructor.construct_yaml_float),
    ("bool", yaml.constructor.SafeConstructor.construct_yaml_bool),
    ("null", yaml.constructor.SafeConstructor.construct_yaml_null),
):
    _DataLoader.add_constructor(f"tag:yaml.org,2002:{_kind}", _checked(_kind, _fn))
_DataLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
for _kind in ("binary", "set", "omap", "pairs"):
    _DataLoader.add_constructor(f"tag:yaml.org,2002:{_kind}", _refuse)
_DataLoader.add_constructor(None, _refuse)  # any unknown tag


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that names the same key twice (PyYAML would keep the last silently)."""


def refuse_duplicate_keys(loader: Any, node: yaml.MappingNode) -> None:
    """Raise :class:`DuplicateKeyError`, at the second one, if two keys of ``node`` are equal.

    Keys compare as the values they build (``1`` and ``0x1``, ``yes`` and ``true``
    are the same key), as they would in the dict. Only the mapping's own keys
    count: a key that a merge (``<<: *base``) brings in may be overridden, as YAML
    means it to be. Keys that are not scalars are left to the constructor, which
    refuses them as unhashable.
    """
    seen: dict[Any, int] = {}
    for index, (key_node, _) in enumerate(node.value):
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        if key_node.tag == _STR_TAG:
            key: Any = key_node.value
        else:
            key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, index)
        except TypeError:
            continue
        if first != index:
            first_line = node.value[first][0].start_mark.line + 1
            raise DuplicateKeyError(
                None, None, duplicate_key_message(key, first_line), key_node.start_mark
            )


def refuse_duplicate_keys_in(loader: Any, root: yaml.Node) -> None:
    """:func:`refuse_duplicate_keys` on every mapping of a composed tree, in document order.

    Iterative, and a node shared through aliases is looked at once.
    """
    seen: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            refuse_duplicate_keys(loader, node)
            for key_node, value_node in reversed(node.value):
                stack.extend((value_node, key_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def _mark(exc: Any) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _check_events(text: str, where: str, max_depth: int, max_items: int) -> None:
    """Depth, alias count and alias expansion from libyaml's (iterative) event stream."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []
    total = aliases = 0
    for event in yaml.parse(text, Loader=_DataLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) > max_depth:
                raise DataFileError(f"{where}{_mark_of(event)}: nested more than {max_depth} deep; refused")
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise DataFileError(f"{where}{_mark_of(event)}: more than {MAX_ALIASES} YAML aliases; refused")
            size = sizes.get(event.anchor or "", 1)
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
        else:
            continue
        if stack:
            stack[-1][1] += size
        else:
            total += size
        if total + sum(entry[1] for entry in stack) > max_items:
            raise DataFileError(f"{where}{_mark_of(event)}: more than {max_items} values once aliases expand; refused")


def _mark_of(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def parse_yaml(text: str, where: str, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """One YAML document as plain bounded data (safe loader; no code runs)."""
    try:
        _check_events(text, where, max_depth, max_items)
        loader = _DataLoader(text)
        try:  # what yaml.load does, with the keys checked between composing and building
            root = loader.get_single_node()
            data = None
            if root is not None:
                refuse_duplicate_keys_in(loader, root)
                data = loader.construct_document(root)
        finally:
            loader.dispose()
    except DuplicateKeyError as exc:
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
