"""The one YAML loader pv reads with: libyaml's safe loader, bounded, plain data only.

Contracts, mapping files, tolerance files: every YAML file pv reads comes from
someone else, so one loader with one set of bounds reads them all. It builds
plain data and nothing else:

* integers of at most :data:`MAX_INT_CHARS` characters (Python will not turn
  more than 4300 digits into an ``int`` or back into text, and hex or
  sexagesimal literals grow without that limit); a scalar that does not fit its
  tag (``!!int abc``) is a :class:`ValueProblem`;
* timestamps (and YAML 1.1's ``=``) stay the text written: readers check dates
  as strings, as the JSON schema does;
* tags that build something other than JSON data (``!!binary``, ``!!set``,
  ``!!omap``, ``!!pairs``, ``!!python/*``, any unknown tag) are a :class:`RefusedTag`;
* a mapping that names a key twice is a :class:`DuplicateKeyError` (PyYAML
  would keep the last value silently);
* at most :data:`MAX_ALIASES` aliases, expanding to at most
  :data:`MAX_EXPANDED_NODES` nodes, none inside the node it names, and
  collections nested at most :data:`MAX_DEPTH` deep: :class:`Refused`, found
  by a scan of libyaml's (iterative) event stream before anything is composed.

Building the data is iterative too, so a file nested within the bound loads
whatever the caller's stack depth. Every failure is a ``yaml.YAMLError``
carrying a mark; the reader turns it into its own words (``pv.bounded`` for
data files, ``pv.contract.yamlerrors`` for contracts' located findings).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from pv.errors import brief
from pv.yamlscan import (
    ALIASES,
    DEPTH,
    EXPANSION,
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    RECURSIVE,
    Refused,
    check_structure,
)

#: Longest integer literal accepted (see the module docstring).
MAX_INT_CHARS = 1000

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG_PREFIX = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = (_TAG_PREFIX + t for t in ("str", "map", "seq", "merge"))


class Loader(_BASE):  # type: ignore[misc]
    """libyaml's safe loader with pv's constructors (see the module docstring)."""


class ValueProblem(yaml.constructor.ConstructorError):
    """A scalar whose text does not fit its tag (``!!int abc``) or the integer bound."""


class RefusedTag(ValueProblem):
    """A tag that would build something other than plain data; ``tag`` as written (``!!set``)."""

    def __init__(self, tag: str, known: bool, mark: Any) -> None:
        self.tag = tag
        #: A YAML type that is simply not JSON data (``!!set``), as opposed to an unknown tag.
        self.known = known
        super().__init__(None, None, f"tag {tag} is not plain data; refused", mark)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that names the same key twice (PyYAML would keep the last silently)."""


def clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tag_name(tag: str) -> str:
    """``!!int`` for ``tag:yaml.org,2002:int``; other tags as written."""
    return str(tag).replace(_TAG_PREFIX, "!!")


def duplicate_key_message(key: Any, first_line: int | None) -> str:
    """The words for a repeated mapping key, the same for JSON, YAML and contracts."""
    where = f" (first at line {first_line})" if first_line is not None else ""
    return f"duplicate key {brief(key)}{where}; a key may appear only once in a mapping"


# --------------------------------------------------------------------------- constructors


def _as_text(loader: Any, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


def _bounded_int(loader: Any, node: yaml.Node) -> int:
    text = str(node.value)
    if len(text) > MAX_INT_CHARS:
        raise ValueProblem(None, None, f"integer literal of {len(text)} characters, over the "
                           f"{MAX_INT_CHARS}-character bound", node.start_mark)
    try:
        value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError, IndexError):
        raise ValueProblem(None, None, f"{clip(text)!r} is not a valid !!int", node.start_mark) from None
    return value


def _checked(kind: str, construct: Any) -> Any:
    def run(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError):
            text = node.value if isinstance(node, yaml.ScalarNode) else "..."
            raise ValueProblem(None, None, f"{clip(str(text))!r} is not a valid !!{kind}",
                               node.start_mark) from None
    return run


#: YAML types that are not JSON data: every later reader would have to special-case them.
_NOT_DATA = ("binary", "set", "omap", "pairs")


def _refuse_tag(loader: Any, node: yaml.Node) -> Any:
    name = tag_name(node.tag)
    raise RefusedTag(name, name.removeprefix("!!") in _NOT_DATA, node.start_mark)


Loader.add_constructor(_TAG_PREFIX + "int", _bounded_int)
for _kind, _fn in (("float", yaml.constructor.SafeConstructor.construct_yaml_float),
                   ("bool", yaml.constructor.SafeConstructor.construct_yaml_bool),
                   ("null", yaml.constructor.SafeConstructor.construct_yaml_null)):
    Loader.add_constructor(_TAG_PREFIX + _kind, _checked(_kind, _fn))
Loader.add_constructor(_TAG_PREFIX + "timestamp", _as_text)
# YAML 1.1's "value" type: a plain ``=`` (``formula: =``) is the text "=", not an error.
Loader.add_constructor(_TAG_PREFIX + "value", _as_text)
for _kind in _NOT_DATA:
    Loader.add_constructor(_TAG_PREFIX + _kind, _refuse_tag)
Loader.add_constructor(None, _refuse_tag)  # any unknown tag, !!python/* included


# --------------------------------------------------------------------------- duplicate keys


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
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
            continue
        key: Any = key_node.value if key_node.tag == _STR else loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, index)
        except TypeError:
            continue
        if first != index:
            first_line = node.value[first][0].start_mark.line + 1
            raise DuplicateKeyError(None, None, duplicate_key_message(key, first_line), key_node.start_mark)


def walk_nodes(root: yaml.Node) -> Iterator[yaml.Node]:
    """Every node of a composed tree in document order (a mapping's keys before their values);
    iterative, and a node shared through aliases is given once."""
    seen: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def refuse_duplicate_keys_in(loader: Any, root: yaml.Node) -> None:
    """:func:`refuse_duplicate_keys` on every mapping of a composed tree, in document order."""
    for node in walk_nodes(root):
        if isinstance(node, yaml.MappingNode):
            refuse_duplicate_keys(loader, node)


# --------------------------------------------------------------------------- building


class _Fallback(Exception):
    """A merge key: PyYAML's own constructor knows how to flatten it."""


def construct(loader: Any, root: yaml.Node) -> Any:
    """Plain data from the composed tree: what ``construct_document`` returns, faster.

    PyYAML's constructor pays a generator and several dispatches per node; this
    walk builds plain strings, dicts and lists directly and hands every other
    tag (numbers, booleans, nulls, refused tags, ``!!str`` on a collection) to the
    loader's constructors, so values and errors are the same. Shared nodes
    (aliases) stay shared, as with PyYAML. A file with merge keys (``<<``) is
    built by PyYAML's constructor instead. A key that a mapping repeats is
    refused (``refuse_duplicate_keys``), never silently dropped.

    The walk keeps its own stack instead of recursing: a recursive walk spends
    two interpreter frames per level, so a file nested within MAX_DEPTH could hit
    the recursion limit, at a depth that depended on how deep the caller's stack
    already was. A collection is filled in a tight loop until a child collection
    opens (which is filled next, then its parent resumes), so nodes are built in
    document order and the first error is the first in the file.
    """
    memo: dict[int, Any] = {}
    stack: list[list[Any]] = []  # [node, container, next index] per collection being filled

    def begin(node: yaml.Node) -> Any:
        """The value of ``node``; a collection is returned empty and filled when its frame runs."""
        done = memo.get(id(node), memo)
        if done is not memo:
            return done
        tag = node.tag
        if tag == _STR and isinstance(node, yaml.ScalarNode):
            return node.value
        if tag == _MAP and isinstance(node, yaml.MappingNode):
            mapping: dict[Any, Any] = {}
            memo[id(node)] = mapping
            stack.append([node, mapping, 0])
            return mapping
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            memo[id(node)] = items
            stack.append([node, items, 0])
            return items
        value = loader.construct_object(node, deep=True)
        memo[id(node)] = value
        return value

    scalar = yaml.ScalarNode
    try:
        data = begin(root)
        while stack:
            frame = stack[-1]
            node, container, i = frame
            children, depth = node.value, len(stack)
            n = len(children)
            if type(container) is list:
                while i < n:
                    child = children[i]
                    i += 1
                    if child.tag == _STR and type(child) is scalar:
                        container.append(child.value)
                        continue
                    container.append(begin(child))
                    if len(stack) > depth:
                        break
            else:
                while i < n:
                    key_node, value_node = children[i]
                    i += 1
                    if key_node.tag == _STR and type(key_node) is scalar:
                        key = key_node.value
                    elif isinstance(key_node, yaml.CollectionNode):
                        if key_node.tag == _MERGE:
                            raise _Fallback
                        construct(loader, key_node)  # errors inside the key first, in document order
                        raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                                "found unhashable key", key_node.start_mark)
                    else:
                        if key_node.tag == _MERGE:
                            raise _Fallback
                        key = begin(key_node)
                    try:
                        if key in container:  # the dict would keep the last value silently
                            refuse_duplicate_keys(loader, node)
                    except TypeError:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            "found unhashable key", key_node.start_mark) from None
                    if value_node.tag == _STR and type(value_node) is scalar:
                        container[key] = value_node.value
                        continue
                    container[key] = begin(value_node)
                    if len(stack) > depth:
                        break
            frame[2] = i
            if len(stack) == depth:
                stack.pop()
        return data
    except _Fallback:
        refuse_duplicate_keys_in(loader, root)
        return loader.construct_document(root)


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """One YAML document as plain data, with the node tree it was built from (None, None
    when the text holds no document). Raises ``yaml.YAMLError`` (``Refused``,
    ``ValueProblem``, ``DuplicateKeyError``, libyaml's syntax errors) and, as a last
    resort, ``RecursionError`` or ``MemoryError``."""
    check_structure(text)
    loader = Loader(text)
    try:
        # What yaml.load does, keeping the composed tree for locating findings.
        root = loader.get_single_node()
        return (construct(loader, root) if root is not None else None), root
    finally:
        loader.dispose()


def compose(text: str) -> yaml.Node | None:
    """The node tree of one document (marks give every key's line, column and character
    span), through the same loader and bounds; a BOM is not counted in the marks."""
    check_structure(text)
    node: yaml.Node | None = yaml.compose(text, Loader=Loader)
    return node


__all__ = ["ALIASES", "DEPTH", "EXPANSION", "MAX_ALIASES", "MAX_DEPTH", "MAX_EXPANDED_NODES", "MAX_INT_CHARS",
           "RECURSIVE", "DuplicateKeyError", "Loader", "Refused", "RefusedTag", "ValueProblem", "clip", "compose",
           "construct", "duplicate_key_message", "load", "refuse_duplicate_keys", "refuse_duplicate_keys_in",
           "tag_name"]
