"""Findings: what ``pv validate`` reports, as data.

Loading, the schema and the semantic rules all yield the same frozen ``Finding``,
so the CLI can render one stream as terminal lines or JSON and tests can assert
on ``rule`` and ``path`` instead of parsing message text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)

#: A key path into a YAML document: mapping keys and list indices, outermost first.
KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class Finding:
    """One problem in one file, located at the offending key (1-based line and column)."""

    file: str
    line: int
    column: int
    path: KeyPath
    rule: str
    message: str
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def strict(self) -> Finding:
        """The same finding counted as an error (``--strict``)."""
        return self if self.severity == ERROR else replace(self, severity=ERROR)

    @property
    def display_file(self) -> str:
        """``file`` as valid text (see ``display_path``)."""
        return display_path(self.file)

    def format(self) -> str:
        """``file:line:col: severity RULE: message``, the form editors and CI annotate."""
        return (f"{self.display_file}:{self.line}:{self.column}: {self.severity} {self.rule}: "
                f"{self.message}")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.display_file,
            "line": self.line,
            "column": self.column,
            "path": [p if isinstance(p, (int, str)) else str(p) for p in self.path],
            "json_path": json_path(self.path),
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
        }


def json_path(path: KeyPath) -> str:
    """``$.falsification_tests[2].id`` style, for messages and JSON output."""
    out = "$"
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def dotted(path: KeyPath) -> str:
    """``falsification_tests[2].id``: the path as a reader would write it in a message."""
    text = json_path(path)[1:]
    return text[1:] if text.startswith(".") else (text or "<document>")


def display_path(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes shown as ``\\xff``.

    POSIX file names are bytes; Python keeps the undecodable ones as lone
    surrogates, which no UTF-8 writer (a terminal, a JSON or SARIF file) accepts.
    ``file`` itself keeps them, so the path still opens.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name
