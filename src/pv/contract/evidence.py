"""Which names a cited source file defines, for the evidence-drift rules.

A contract that cites ``parse_stages`` in ``src/pv/stages.py`` makes a claim
about code; if the function is renamed or never existed, the claim is fiction.
Python files are parsed with ``ast`` (so a name in a comment or string does not
count); other languages fall back to a whole-word search of the text.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path

from pv import files

_SEPARATORS = re.compile(r"::|\.|#")


@functools.lru_cache(maxsize=512)
def _python_names(path: str, mtime_ns: int) -> frozenset[str] | None:
    """Qualified names (``f``, ``Cls``, ``Cls.method``) defined in a Python file; None if unparsable."""
    try:
        tree = ast.parse(files.read_text(path))
    except (SyntaxError, ValueError, OSError, RecursionError):
        return None
    names: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                names.add(qual)
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return frozenset(names)


@functools.lru_cache(maxsize=512)
def _text(path: str, mtime_ns: int) -> str:
    try:
        return files.read_text(path)
    except (OSError, ValueError):
        return ""


def _parts(name: str) -> list[str]:
    return [p for p in _SEPARATORS.split(name.strip().removesuffix("()")) if p]


def is_defined(name: str, path: Path) -> bool:
    """True when ``path`` defines ``name``.

    Python: ``name`` is a qualified name in the file (``f``, ``Cls.method``),
    optionally prefixed by the file's own module path (``pv.stages.parse_stages``
    for ``src/pv/stages.py``). Other files: the last component as a whole word.
    """
    try:
        mtime = os.stat(path).st_mtime_ns
    except (OSError, ValueError):  # a NUL byte or an over-long name from the contract
        return False
    parts = _parts(name)
    if not parts:
        return False
    if path.suffix == ".py":
        defined = _python_names(str(path), mtime)
        if defined is not None:
            module = list(path.with_suffix("").parts)
            for cut in range(len(parts)):
                prefix = parts[:cut]
                if prefix and module[-len(prefix):] != prefix:
                    continue
                if ".".join(parts[cut:]) in defined:
                    return True
            return False
    return re.search(rf"(?<![\w]){re.escape(parts[-1])}(?![\w])", _text(str(path), mtime)) is not None
