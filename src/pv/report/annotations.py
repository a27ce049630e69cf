"""One located problem in a form every CI output format can render.

``Annotation`` is the common shape of a validation finding and a gate failure
(file, line, column, rule, level, message); ``sarif`` and ``github`` render a
list of them, so each format is written once for every command.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pv.contract.findings import display_path

if TYPE_CHECKING:
    from pv.contract.findings import Finding
    from pv.contract.model import Contract
    from pv.report.gate import GateFailure

LEVELS = ("error", "warning", "note")


@dataclass(frozen=True)
class Annotation:
    """A problem at a place: ``file`` None when it belongs to no file (a baseline, say)."""

    file: str | None
    line: int
    column: int
    rule: str
    level: str
    message: str


def from_findings(findings: Iterable[Finding]) -> list[Annotation]:
    return [Annotation(f.file, f.line, f.column, f.rule, f.severity, f.message) for f in findings]


def from_gate_failures(failures: Iterable[GateFailure], contracts: Iterable[Contract] = ()) -> list[Annotation]:
    """Gate failures, each at its contract file and at the falsifier's ``id`` line when
    ``contracts`` know them (a removed falsifier or contract points at line 1 of the file)."""
    by_id = {c.id: c for c in contracts}
    out = []
    for failure in failures:
        where = "/".join(p for p in (failure.contract, failure.falsifier) if p)
        contract = by_id.get(failure.contract)
        found = contract.falsifier(failure.falsifier) if contract and failure.falsifier else None
        out.append(Annotation(str(contract.path) if contract else None, found.line if found else 1, 1,
                              f"gate/{failure.kind}", "error", f"{where}: {failure.message}"))
    return out


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def relative(path: str, base: str | None = None) -> str:
    """``path`` relative to ``base`` (the current directory) when inside it, with ``/``."""
    try:
        rel = os.path.relpath(path, base or os.getcwd())
    except ValueError:  # another drive (Windows)
        return path.replace(os.sep, "/")
    return (path if rel.startswith("..") else rel).replace(os.sep, "/")


def github(annotations: Iterable[Annotation]) -> list[str]:
    """GitHub Actions workflow commands: ``::error file=F,line=L,col=C,title=RULE::message``.

    Levels map to ``error``, ``warning`` and ``notice``; values are escaped as the
    runner requires (``%``, CR, LF; ``:`` and ``,`` too inside properties).
    """
    lines = []
    for a in annotations:
        command = {"error": "error", "warning": "warning"}.get(a.level, "notice")
        props = []
        if a.file is not None:
            props.append(f"file={_escape_property(display_path(relative(a.file)))}")
            props += [f"line={a.line}", f"col={a.column}"]
        props.append(f"title={_escape_property(a.rule)}")
        lines.append(f"::{command} {','.join(props)}::{_escape_data(a.message)}")
    return lines
