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

from pathlib import Path
from typing import Any

import yaml

from pv import files, safeyaml
from pv.contract.findings import ERROR, Finding, KeyPath
from pv.contract.yamlerrors import explain
from pv.errors import PvError

#: Contracts are hand-written text; anything bigger is refused before it is read.
MAX_BYTES = 2 * 1024 * 1024
#: The YAML loader's bounds, which contracts share with every YAML file pv reads.
MAX_DEPTH = safeyaml.MAX_DEPTH
MAX_ALIASES = safeyaml.MAX_ALIASES
MAX_EXPANDED_NODES = safeyaml.MAX_EXPANDED_NODES
MAX_INT_CHARS = safeyaml.MAX_INT_CHARS


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
            self._root = safeyaml.compose(self.text)
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
            self._root = safeyaml.compose(self.text)
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
    """The file's bytes through the one bounded reader (opened, then checked: no FIFO, device
    or ``/proc`` file, nothing over ``max_bytes``), or a PV001/PV002 finding."""
    try:
        return files.read_regular(path, max_bytes)
    except files.NotRegularFileError:
        raise _fail(path, "PV001", "not a regular file") from None
    except files.TooLargeError as exc:
        size = f"{exc.size} bytes, " if exc.size is not None else ""
        raise _fail(path, "PV002", f"file is {size}over the {max_bytes}-byte bound for a contract") from None
    except (OSError, ValueError) as exc:
        raise _fail(path, "PV001", f"cannot read file: {getattr(exc, 'strerror', None) or exc}") from None


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


def _yaml_error(path: Path, exc: yaml.YAMLError, text: str = "") -> ContractLoadError:
    return _fail(path, *explain(exc, text, MAX_DEPTH))


def parse_text(path: Path, text: str) -> Document:
    """Parse already-decoded text as one contract document (see ``load_document``)."""
    try:
        data, root = safeyaml.load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc, text) from None
    except (RecursionError, MemoryError):
        raise _fail(path, "PV004", "invalid YAML: nested too deeply to parse") from None
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
