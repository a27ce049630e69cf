"""Read one contract file safely and fast, and locate keys in it on demand.

The happy path is one libyaml parse (``CSafeLoader``): contracts that are fine
are never parsed a second time. Line numbers come from composing the YAML node
tree, which happens only when a finding needs a location (``Document.locate``).

Every way a file can be unfit (unreadable, too big, binary, invalid YAML,
several documents, alias bombs, a key repeated in a mapping, ``!!python/*``
tags, not a mapping) raises ``ContractLoadError``, a ``PvError`` carrying a
located ``Finding``, so callers either print one line or turn it into a
verdict; never a traceback.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from pv.bounded import refuse_duplicate_keys, refuse_duplicate_keys_in
from pv.contract.findings import ERROR, Finding, KeyPath
from pv.contract.yamlerrors import ValueProblem, explain
from pv.contract.yamlerrors import clip as _clip
from pv.contract.yamlerrors import position as _position
from pv.errors import PvError

#: Contracts are hand-written text; anything bigger is refused before it is read.
MAX_BYTES = 2 * 1024 * 1024
#: Alias uses allowed per file. Real contracts use a handful (merge keys), if any.
MAX_ALIASES = 256
#: Nodes after expanding every alias: billion-laughs grows exponentially past this.
MAX_EXPANDED_NODES = 200_000

_LOADER_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Collections nested deeper than this are refused: libyaml's composer recurses in C
#: and a few tens of thousands of levels crash the interpreter. Real contracts nest ~10.
MAX_DEPTH = 512
#: An anchor (``&name``) or an alias (``*name``): the indicator and a name character.
#: Either counts only where a node may start (see ``_at_node_start``); ``&mut`` in
#: a Rust formula or ``**bold**`` in prose does not. Without both, no alias bomb and
#: no recursive structure can exist.
_ANCHOR_RE = re.compile(r"&[^\s\[\]{},]")
_ALIAS_RE = re.compile(r"\*[^\s\[\]{},]")
#: Nesting depth is bounded by what the text can express. A block collection nested
#: in another starts at a greater column, which comes from a line's indentation or
#: from a compact indicator that follows another on the same line (``- - x``,
#: ``? - x``); a zero-indented list under a key shares its parent's column, so each
#: column holds at most two levels; flow brackets add one each. Depth is at most
#: brackets + 2 * (indentation + indicator pairs + 1): with brackets under 96,
#: indentation under 64 and pairs under 64 that is under 512 (MAX_DEPTH), so the
#: event scan is skipped. Ordinary contracts are far below all three.
_SCAN_BOUND = 96
_DEEP_INDENT = "\n" + " " * 64
_PAIR_BOUND = 64
_COMPACT_PAIR = re.compile(r"[-?][ \t]+[-?](?:[ \t]|$)", re.MULTILINE)


class _Loader(_LOADER_BASE):  # type: ignore[misc]
    """libyaml's safe loader, except that timestamps stay the strings written.

    Contracts are validated against a JSON schema, where a date is a string;
    ``created: 2026-02-18`` should not become a ``datetime.date``.
    """


def _construct_as_text(loader: Any, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_as_text)
# YAML 1.1's "value" type: a plain ``=`` (``formula: =``) is the text "=", not an error.
_Loader.add_constructor("tag:yaml.org,2002:value", _construct_as_text)

#: Longest integer literal accepted. Python refuses to turn more than 4300 decimal
#: digits into an int (and back into text); hex and sexagesimal literals have no
#: such limit but grow without bound. No contract needs more than a few digits.
MAX_INT_CHARS = 1000


def _construct_bounded_int(loader: Any, node: yaml.Node) -> int:
    text = str(node.value)
    if len(text) > MAX_INT_CHARS:
        raise ValueProblem(None, None, f"integer literal of {len(text)} characters, over the "
                           f"{MAX_INT_CHARS}-character bound", node.start_mark)
    try:
        value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        raise ValueProblem(None, None, f"{_clip(text)!r} is not a valid !!int",
                           node.start_mark) from None
    return value


def _checked(kind: str, construct: Any) -> Any:
    def run(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError):
            text = node.value if isinstance(node, yaml.ScalarNode) else "..."
            raise ValueProblem(None, None, f"{_clip(str(text))!r} is not a valid !!{kind}",
                               node.start_mark) from None
    return run


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)
for _kind, _fn in (("float", yaml.constructor.SafeConstructor.construct_yaml_float),
                   ("bool", yaml.constructor.SafeConstructor.construct_yaml_bool),
                   ("null", yaml.constructor.SafeConstructor.construct_yaml_null)):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_kind}", _checked(_kind, _fn))


def _refuse_tag(loader: Any, node: yaml.Node) -> Any:
    name = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    raise ValueProblem(None, None, f"tag {name} is not supported in a contract (it builds a "
                       "value that is not plain data)", node.start_mark)


# Bytes, sets and pairs lists are not JSON data: every later reader (the schema,
# --format json, the status rewrite) would have to special-case them.
for _kind in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_kind}", _refuse_tag)


class ContractLoadError(PvError):
    """The file cannot be read as one YAML mapping; ``finding`` says where and why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.format())
        self.finding = finding


class Document:
    """One parsed contract: plain data and the YAML node tree it was built from.

    The tree comes free with the parse (libyaml composes it, the constructor
    turns it into ``data``), so locating a finding never parses the file again;
    a mapping's keys are indexed the first time a finding points into it, so
    locating many findings in a mapping of thousands of keys stays linear.
    """

    __slots__ = ("_index", "_root", "data", "path", "text")

    def __init__(self, path: Path, data: dict[str, Any], text: str,
                 root: yaml.Node | None = None) -> None:
        self.path = path
        self.data = data
        self.text = text
        self._root = root
        self._index: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def contract_id(self) -> str:
        """``metadata.id`` when given as a string, else the file stem."""
        meta = self.data.get("metadata")
        cid = meta.get("id") if isinstance(meta, dict) else None
        return cid if isinstance(cid, str) and cid.strip() else self.path.stem

    def _keys(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        index = self._index.get(id(node))
        if index is None:
            index = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    index.setdefault(str(key_node.value), (key_node, value_node))
            self._index[id(node)] = index
        return index

    def key_node(self, path: KeyPath) -> yaml.ScalarNode | None:
        """The key node of the last mapping key in ``path``, or None if the path is not all there."""
        node = self._root
        key: yaml.ScalarNode | None = None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                hit = self._keys(node).get(str(part))
                if hit is None or not isinstance(hit[0], yaml.ScalarNode):
                    return None
                key, node = hit[0], hit[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and 0 <= part < len(node.value):
                key, node = None, node.value[part]
            else:
                return None
        return key

    def scalar_text(self, path: KeyPath) -> str | None:
        """The source text of the scalar at ``path`` as written (``1.10``, which the float
        ``1.1`` has lost), or None when the path does not end at a scalar."""
        if self._root is None:
            self._root = yaml.compose(self.text, Loader=_Loader)
        node = self._root
        for part in path:
            if isinstance(node, yaml.MappingNode):
                hit = self._keys(node).get(str(part))
                if hit is None:
                    return None
                node = hit[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return None
        return str(node.value) if isinstance(node, yaml.ScalarNode) else None

    def item_keys(self, section: str, key: str) -> dict[int, tuple[int, int]]:
        """index -> 1-based (line, column) of ``key`` in each mapping item of the list ``section``.

        One pass over the section, for set-level rules that may point at every item.
        """
        top = self._root
        found: dict[int, tuple[int, int]] = {}
        if not isinstance(top, yaml.MappingNode):
            return found
        hit = self._keys(top).get(section)
        if hit is None or not isinstance(hit[1], yaml.SequenceNode):
            return found
        for i, item in enumerate(hit[1].value):
            if isinstance(item, yaml.MappingNode):
                for key_node, _ in item.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                        found[i] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                        break
        return found

    def locate(self, path: KeyPath) -> tuple[int, int]:
        """1-based (line, column) of the deepest key or item of ``path`` present in the file.

        A mapping key points at the key itself (the offending key, not its value);
        a list index points at the item.
        """
        if self._root is None:
            self._root = yaml.compose(self.text, Loader=_Loader)
        node = self._root
        if node is None:
            return (1, 1)
        mark = node.start_mark
        for part in path:
            if isinstance(node, yaml.MappingNode):
                hit = self._keys(node).get(str(part))
                if hit is None:
                    break
                mark, node = hit[0].start_mark, hit[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return (mark.line + 1, mark.column + 1)


def _fail(path: Path, rule: str, message: str, line: int = 1, column: int = 1) -> ContractLoadError:
    return ContractLoadError(Finding(str(path), line, column, (), rule, message, ERROR))


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _fail(path, "PV001", f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "PV001", "not a regular file")
    if st.st_size > max_bytes:
        raise _fail(path, "PV002", f"file is {st.st_size} bytes, over the {max_bytes}-byte bound "
                                   "for a contract")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise _fail(path, "PV001", f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:  # grew between stat and read
        raise _fail(path, "PV002", f"file is over the {max_bytes}-byte bound for a contract")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise _fail(path, "PV003", "binary file (contains NUL bytes), not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(path, "PV003", f"not UTF-8 text (invalid byte at offset {exc.start})",
                    line) from None
    return text.removeprefix("\ufeff")


def _at_node_start(pattern: re.Pattern[str], text: str) -> bool:
    """Does ``pattern`` match where a YAML node may start: at a line's indentation,
    after ``: ``, ``- ``, ``? ``, or after a flow ``[``, ``{``, ``,``?

    A plain C-speed search finds the candidates; only those are looked at.
    """
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 64):match.start()]
        stripped = before.rstrip(" \t")
        if not stripped or stripped[-1] in "\n[{,":
            return True
        if stripped[-1] in ":-?" and len(stripped) < len(before):
            return True
    return False


def _may_be_hostile(text: str) -> bool:
    """Cheap test: could this text hold an alias, or nest past MAX_DEPTH?"""
    if "&" in text and "*" in text and _at_node_start(_ANCHOR_RE, text) \
            and _at_node_start(_ALIAS_RE, text):
        return True
    if text.count("[") + text.count("{") >= _SCAN_BOUND or _DEEP_INDENT in text:
        return True
    for pairs, _ in enumerate(_COMPACT_PAIR.finditer(text), 1):
        if pairs >= _PAIR_BOUND:
            return True
    return False


def _check_structure(path: Path, text: str) -> None:
    """Refuse alias bombs and pathological nesting before anything is composed.

    libyaml's event parser is iterative, so it is safe on any input. Each
    anchored node's expanded size is recorded when it closes and an alias adds
    that size: exponential growth (billion laughs) trips the bound after a few
    dozen events, long before anything is allocated. Only files that the cheap
    pre-test flags pay for this scan; ordinary contracts never do.
    """
    if not _may_be_hostile(text):
        return
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []  # [anchor, size] per open collection
    aliases = expanded = 0
    open_anchors: list[str] = []
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([event.anchor, 1])
                if event.anchor is not None:
                    open_anchors.append(event.anchor)
                if len(stack) > MAX_DEPTH:
                    raise _fail(path, "PV009", f"collections nested more than {MAX_DEPTH} deep; "
                                "refused", *_position(event.start_mark))
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, size = stack.pop()
                if anchor is not None:
                    sizes[anchor] = size
                    open_anchors.remove(anchor)
                if stack:
                    stack[-1][1] += size
                continue
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if event.anchor in open_anchors:
                    # The node would contain itself: every reader that walks it
                    # (the schema, JSON output, a status rewrite) recurses forever.
                    raise _fail(path, "PV007", f"alias *{event.anchor} refers to a node that "
                                "contains it (a recursive structure); refused",
                                *_position(event.start_mark))
                size = sizes.get(event.anchor or "", 1)
                expanded += size
                if aliases > MAX_ALIASES:
                    raise _fail(path, "PV007", f"more than {MAX_ALIASES} YAML aliases; refused "
                                "(alias bomb guard)", *_position(event.start_mark))
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            if stack:
                stack[-1][1] += size
            if expanded > MAX_EXPANDED_NODES:
                raise _fail(path, "PV007", f"YAML aliases expand past {MAX_EXPANDED_NODES} nodes; "
                            "refused (alias bomb guard)", *_position(event.start_mark))
    except yaml.YAMLError:
        return  # the real parse below reports syntax errors with their location


def _yaml_error(path: Path, exc: yaml.YAMLError, text: str = "") -> ContractLoadError:
    return _fail(path, *explain(exc, text, MAX_DEPTH))


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class _Fallback(Exception):
    """A merge key: PyYAML's own constructor knows how to flatten it."""


def _construct(loader: Any, root: yaml.Node) -> Any:
    """Plain data from the composed tree: what ``construct_document`` returns, faster.

    PyYAML's constructor pays a generator and several dispatches per node; this
    walk builds plain strings, dicts and lists directly and hands every other
    tag (numbers, booleans, nulls, refused tags, ``!!str`` on a collection) to the
    loader's constructors, so values and errors are the same. Shared nodes
    (aliases) stay shared, as with PyYAML. A file with merge keys (``<<``) is
    built by PyYAML's constructor instead. A key that a mapping repeats is
    refused (``pv.bounded.refuse_duplicate_keys``), never silently dropped. Depth
    is bounded by the structure check, far below the interpreter's recursion limit.
    """
    memo: dict[int, Any] = {}

    def build(node: yaml.Node) -> Any:
        done = memo.get(id(node), memo)
        if done is not memo:
            return done
        tag = node.tag
        if tag == _STR and isinstance(node, yaml.ScalarNode):
            return node.value
        if tag == _MAP and isinstance(node, yaml.MappingNode):
            mapping: dict[Any, Any] = {}
            memo[id(node)] = mapping
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    raise _Fallback
                key = build(key_node)
                try:
                    if key in mapping:  # the dict would keep the last value silently
                        refuse_duplicate_keys(loader, node)
                    mapping[key] = build(value_node)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found unhashable key", key_node.start_mark) from None
            return mapping
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            memo[id(node)] = items
            items.extend(build(item) for item in node.value)
            return items
        value = loader.construct_object(node, deep=True)
        memo[id(node)] = value
        return value

    try:
        return build(root)
    except _Fallback:
        refuse_duplicate_keys_in(loader, root)
        return loader.construct_document(root)


def parse_text(path: Path, text: str) -> Document:
    """Parse already-decoded text as one contract document (see ``load_document``)."""
    _check_structure(path, text)
    loader = _Loader(text)
    try:
        # What yaml.load does, keeping the composed tree for locating findings.
        root = loader.get_single_node()
        data = _construct(loader, root) if root is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc, text) from None
    except (RecursionError, MemoryError):
        raise _fail(path, "PV004", "invalid YAML: nested too deeply to parse") from None
    finally:
        loader.dispose()
    if data is None:
        raise _fail(path, "PV006", "empty file: a contract is a YAML mapping with at least "
                    "'metadata'")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a scalar ({type(data).__name__})"
        raise _fail(path, "PV006", f"the document is {kind}; a contract is a YAML mapping")
    return Document(path, data, text, root)


def load_document(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Document:
    """Load one contract file as a ``Document`` or raise ``ContractLoadError``."""
    path = Path(path)
    return parse_text(path, _decode(path, _read_bytes(path, max_bytes)))
