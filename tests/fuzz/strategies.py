"""Hypothesis strategies for hostile files: values of the wrong type, bombs, mutated text.

Three kinds of damage, mixed freely by the targets:

* ``mutate_data``: a real document (manifest, record, config) with a few
  values replaced by hostile ones, keys dropped or added. Values too big for
  Python to hold as data (100,000-deep nesting, 5,000-digit integers) are
  planted as placeholders and expanded in the serialised text (``expand``).
* ``mutate_text``: the serialised text with hostile snippets inserted, spans
  deleted, replaced or repeated, bytes flipped.
* ``FILE_KINDS``: the file is not a regular file at all (FIFO, device or
  ``/proc`` link, folder, dangling or looping link).
"""

from __future__ import annotations

import collections
import functools
import json
import re
from typing import Any

from hypothesis import strategies as st

#: Placeholders expanded after serialisation (see ``expand``).
_DEEP = "__pv_deep_{}__"
_BIGINT = "__pv_bigint_{}__"
_PLACEHOLDER = re.compile(r"[\"']?__pv_(deep|bigint)_(\d+)__[\"']?")

SPECIAL_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63, 2**64, 2**70, -(2**70)]
SPECIAL_STRINGS = [
    "", " ", "x" * 300, "a\nb", "\r\n", "\x00", "\u202e", "..", "../../etc/passwd",
    "/proc/self/mem", "/dev/zero", "/etc/passwd", "\udcff", "NaN", "Infinity", "-1", "1e999",
    "float32", "bf16", "q4_1", "attn_scores", "lm_head", "ALL", "FALSIFY-X-001", "%s%n",
]

#: Snippets that once broke a reader or could: tags with bad values, anchors,
#: flow brackets, document markers, control characters, huge numbers.
TEXT_SNIPPETS = [
    "!!int abc", "!!float x", "!!bool maybe", "!!null x", "!!binary aGk=", "!!set {a}",
    "!!python/object/apply:os.system [echo]", "!!timestamp 2026-99-99", "!custom 1",
    "&a ", "*a", "&a [*a]", "<<: *a", "? ", "- ", ": ", "[", "]", "{", "}", ",", "\"", "'",
    "---\n", "...\n", "\t", "\n", "\r", "\x00", "\x1b", "\ufeff", "\udcff",
    "9" * 5000, "0x" + "f" * 400, "1:" * 80 + "1", "1e999", "-.inf", ".nan", "NaN", "Infinity",
    "[" * 2000, "{a: " * 2000, "- " * 2000, "null", "true", "~", "%YAML 1.1\n", "%TAG ! !x\n",
]

FILE_KINDS = ["fifo", "devzero", "procmem", "procstatus", "folder", "dangling", "loop"]


def expand(text: str) -> str:
    """Replace placeholders (quoted or not) by their real, unparseable-by-default content."""

    def one(m: re.Match[str]) -> str:
        n = int(m.group(2))
        return "[" * n + "]" * n if m.group(1) == "deep" else "9" * n

    return _PLACEHOLDER.sub(one, text)


@functools.lru_cache(maxsize=1)
def hostile_values() -> st.SearchStrategy[Any]:
    """Any JSON-shaped value, biased to what breaks readers (built once: recursive strategies are costly)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(SPECIAL_INTS),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(SPECIAL_STRINGS),
        st.text(max_size=12),
        st.sampled_from([40, 1000, 100_000]).map(_DEEP.format),
        st.sampled_from([400, 4301, 20_000]).map(_BIGINT.format),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )


def _paths(doc: Any, limit: int = 400) -> list[tuple[Any, ...]]:
    """Paths to values in ``doc``, breadth first, at most ``limit`` (grown lists stay cheap)."""
    out: list[tuple[Any, ...]] = []
    queue: collections.deque[tuple[tuple[Any, ...], Any]] = collections.deque([((), doc)])
    while queue and len(out) < limit:
        prefix, value = queue.popleft()
        out.append(prefix)
        if isinstance(value, dict):
            queue.extend(((*prefix, k), v) for k, v in value.items())
        elif isinstance(value, list):
            queue.extend(((*prefix, i), v) for i, v in enumerate(value[:limit]))
    return out


def _copy(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


@st.composite
def mutate_data(draw: st.DrawFn, base: Any, max_ops: int = 3) -> Any:
    """``base`` (JSON-shaped) with 1..max_ops values replaced, keys removed or added."""
    doc = _copy(base)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "grow"]))
        if not path:
            if op == "replace":
                doc = draw(hostile_values())
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(SPECIAL_STRINGS))] = draw(hostile_values())
        elif op == "grow" and isinstance(parent[last], list):
            parent[last] = parent[last] * draw(st.sampled_from([2, 100, 5000]))
        else:
            parent[last] = draw(hostile_values())
    return doc


@st.composite
def mutate_text(draw: st.DrawFn, base: str, max_ops: int = 3) -> str:
    """``base`` with a few snippets inserted and spans deleted, replaced or repeated."""
    text = base
    for _ in range(draw(st.integers(1, max_ops))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 40)))
        op = draw(st.sampled_from(["insert", "insert", "delete", "replace", "repeat", "text"]))
        if op == "insert":
            text = text[:i] + draw(st.sampled_from(TEXT_SNIPPETS)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[j:]
        elif op == "replace":
            text = text[:i] + draw(st.sampled_from(TEXT_SNIPPETS)) + text[j:]
        elif op == "repeat":
            text = text[:i] + text[i:j] * draw(st.sampled_from([2, 50, 2000])) + text[j:]
        else:
            text = text[:i] + draw(st.text(max_size=8)) + text[i:]
    return text


def encode(text: str) -> bytes:
    """Text as UTF-8, lone surrogates kept as invalid bytes (a not-UTF-8 file)."""
    return text.encode("utf-8", "surrogateescape") if _has_surrogates(text) else text.encode()


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_bytes(doc: Any) -> bytes:
    """A document as JSON text, placeholders expanded, NaN/Infinity as Python writes them."""
    return encode_any(expand(json.dumps(doc, ensure_ascii=False)))


def encode_any(text: str) -> bytes:
    try:
        return encode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


@st.composite
def document(draw: st.DrawFn, base: Any, render: Any = json_bytes) -> tuple[str, bytes | str]:
    """A file's content: the good document, a data mutation, a text mutation, or a file kind.

    Returns ``(how, content)``; ``content`` is bytes, or a ``FILE_KINDS`` name.
    """
    how = draw(st.sampled_from(["data", "data", "data", "text", "text", "kind", "good"]))
    if how == "good":
        return how, render(base)
    if how == "data":
        return how, render(draw(mutate_data(base)))
    if how == "text":
        good = render(base).decode("utf-8")
        return how, encode_any(expand(draw(mutate_text(good))))
    return how, draw(st.sampled_from(FILE_KINDS))
