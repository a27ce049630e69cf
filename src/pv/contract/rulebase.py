"""What every semantic rule is made of: ``Issue`` out, ``RuleContext`` in, small readers.

Rules live in several modules by concept (``rules`` for the core checks,
``statuses`` for where and how a status is written, ``references`` for ids
that must resolve, ``hygiene`` for claims that cannot be tested as written);
this module is what they share, so none imports another.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv.contract.findings import ERROR, KeyPath
from pv.contract.load import Document


@dataclass(frozen=True)
class Issue:
    """A rule's raw output: where (key path) and what; located later, only if reported."""

    path: KeyPath
    message: str
    severity: str = ERROR


@dataclass
class RuleContext:
    """What rules may know beyond the document: the repository root for evidence."""

    repo_root: Path | None = None
    check_evidence: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


RuleFn = Callable[[Document, RuleContext], Iterator[Issue]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: str
    summary: str
    fn: RuleFn | None = None  # None: applied by the loader or across the set


def close_match(word: str, known: tuple[str, ...] | frozenset[str] | set[str],
                cutoff: float = 0.75) -> str | None:
    """The known word closest to ``word`` (difflib ratio >= cutoff), or None."""
    return _close_match(word, tuple(sorted(known)), cutoff)


@functools.lru_cache(maxsize=4096)
def _close_match(word: str, known: tuple[str, ...], cutoff: float) -> str | None:
    # Cached: the same custom keys (kernel_structure, simd_dispatch, ...) recur in
    # every contract of a repository, and difflib is the costliest part of a rule.
    hits = difflib.get_close_matches(word, known, n=1, cutoff=cutoff)
    return hits[0] if hits else None


def falsifiers(doc: Document) -> Iterator[tuple[int, dict[str, Any]]]:
    tests = doc.data.get("falsification_tests")
    if isinstance(tests, list):
        for i, test in enumerate(tests):
            if isinstance(test, dict):
                yield i, test


def obligations(doc: Document) -> Iterator[tuple[int, dict[str, Any]]]:
    items = doc.data.get("proof_obligations")
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield i, item


def metadata(doc: Document) -> dict[str, Any]:
    meta = doc.data.get("metadata")
    return meta if isinstance(meta, dict) else {}


def strings(value: Any) -> list[tuple[int | None, str]]:
    """(index or None, text) for a string or a list of strings; other values give nothing."""
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, list):
        return [(i, v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def shown(value: Any, limit: int = 40) -> str:
    """A short repr for messages (never the whole of a long value)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: ``ATTN-SUB-ORD-001``, ``PO-SM-RFE``, ``FALSIFY-SM-A``: at least two upper-case words
#: (or numbers) joined by dashes or underscores. A reference of this shape is an id,
#: and an id that names nothing is an error; other text may be a property or a note.
ID_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:[-_][A-Z0-9]+)+$")
