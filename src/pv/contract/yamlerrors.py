"""What a YAML error means, in one line: the rule it falls under, the message, where.

libyaml's messages name the parser's state ("while scanning for the next token:
found character that cannot start any token"); these say what is wrong with the
file (a tab where YAML wants spaces, several documents, a refused tag) and point
at it. ``pv.contract.load`` turns the answer into a located finding.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from pv import safeyaml
from pv.safeyaml import DuplicateKeyError, Refused, RefusedTag, ValueProblem

#: The rule each bound of the YAML loader's structure scan falls under.
_REFUSED_RULES = {safeyaml.DEPTH: "PV009", safeyaml.ALIASES: "PV007", safeyaml.EXPANSION: "PV007",
                  safeyaml.RECURSIVE: "PV007"}


def position(mark: Any) -> tuple[int, int]:
    """1-based (line, column) of a libyaml mark (0-based), (1, 1) when there is none."""
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


#: Line breaks as libyaml counts lines (not ``str.splitlines``, which also splits at \f, \v...).
_LINE_BREAK = re.compile("\r\n|\r|\n|\x85|\u2028|\u2029")


def tab_near(text: str, mark: Any) -> tuple[int, int] | None:
    """1-based (line, column) of a tab at the error mark or right before it, or None.

    libyaml's complaint about a tab ("found character that cannot start any token",
    "found a tab character that violates indentation") never says that YAML
    indents with spaces only.
    """
    if mark is None:
        return None
    lines = _LINE_BREAK.split(text, maxsplit=mark.line + 1)
    if mark.line >= len(lines):
        return None
    row = lines[mark.line]
    for col in (mark.column, mark.column - 1):
        if 0 <= col < len(row) and row[col] == "\t":
            return mark.line + 1, col + 1
    return None


def explain(exc: yaml.YAMLError, text: str, max_depth: int) -> tuple[str, str, int, int]:
    """(rule, message, line, column) for a YAML error raised while loading ``text``."""
    line, col = position(getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None))
    problem = str(getattr(exc, "problem", "") or exc).strip()
    if isinstance(exc, yaml.composer.ComposerError) and "single document" in str(exc):
        return ("PV005", "several YAML documents in one file; a contract is exactly one document",
                line, col)
    if isinstance(exc, Refused):
        return _REFUSED_RULES[exc.kind], exc.problem, line, col
    if isinstance(exc, DuplicateKeyError):
        return "PV004", problem, line, col
    if isinstance(exc, RefusedTag):
        if "python/" in exc.tag:
            return "PV008", f"tag {exc.tag} is refused: pv never constructs Python objects", line, col
        if exc.known:
            message = f"tag {exc.tag} is not supported in a contract (it builds a value that is not plain data)"
            return "PV008", message, line, col
        written = exc.tag.replace("!!", "tag:yaml.org,2002:", 1)
        return "PV008", f"unsupported YAML tag {exc.tag}: could not determine a constructor for the tag {written!r}", \
            line, col
    if isinstance(exc, ValueProblem):
        return "PV004", f"invalid YAML value: {problem}", line, col
    if isinstance(exc, yaml.constructor.ConstructorError) and "unhashable" in problem:
        return "PV004", "invalid YAML: a mapping key is a list or a mapping", line, col
    if isinstance(exc, yaml.constructor.ConstructorError):
        tag = re.search(r"tag '([^']*)'", problem)
        name = tag.group(1) if tag else "?"
        name = name.replace("tag:yaml.org,2002:", "!!")
        if "python/" in name:
            return "PV008", f"tag {name} is refused: pv never constructs Python objects", line, col
        return "PV008", f"unsupported YAML tag {name}: {problem}", line, col
    if "nesting depth" in problem:
        # Newer libyaml releases stop deep nesting themselves (in the scanner,
        # possibly before our event scan reaches MAX_DEPTH): the same finding.
        message = f"collections nested too deep for the YAML parser (pv allows {max_depth}); refused"
        return "PV009", message, line, col
    tab = tab_near(text, getattr(exc, "problem_mark", None)) \
        if isinstance(exc, yaml.scanner.ScannerError) else None
    if tab is not None:
        message = (f"invalid YAML: a tab character at line {tab[0]}, column {tab[1]}: YAML "
                   "indents with spaces, never tabs")
        return "PV004", message, *tab
    context = getattr(exc, "context", None)
    detail = f"{context}: {problem}" if context else problem
    return "PV004", f"invalid YAML: {detail}", line, col
