"""JUnit XML for ``pv falsify --junit PATH``: one test case per falsifier.

The shape test-report viewers read (Jenkins, GitLab, GitHub test-report
actions): ``<testsuites><testsuite name=CONTRACT tests= failures= skipped=>``,
one ``<testcase classname=CONTRACT name=FALSIFIER>`` per row, with ``<failure>``
for a refuted prediction, ``<error>`` for a test that errored (a broken test, which
refutes nothing), ``<skipped>`` for a test that did not run, and the
status move and evidence record in ``<system-out>``. Written with the standard
library's ElementTree, so text is escaped and the file is well-formed XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pv import files

if TYPE_CHECKING:
    from pv.falsify.run import Row

#: XML 1.0 forbids most control characters even when escaped.
_BAD_XML = {c: None for c in range(32) if c not in (9, 10, 13)}


def _text(value: object) -> str:
    return str(value).translate(_BAD_XML)


def _suite(parent: ET.Element, contract_id: str, rows: list[Row], elapsed_s: float | None) -> tuple[int, int, int]:
    failed = sum(1 for r in rows if r.outcome == "failed")
    errored = sum(1 for r in rows if r.outcome == "error")
    skipped = sum(1 for r in rows if r.outcome not in ("passed", "failed", "error"))
    suite = ET.SubElement(parent, "testsuite", name=_text(contract_id), tests=str(len(rows)),
                          failures=str(failed), errors=str(errored), skipped=str(skipped))
    if elapsed_s is not None:
        suite.set("time", f"{elapsed_s:.3f}")
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=_text(contract_id),
                             name=_text(row.falsifier_id))
        reason = _text(row.reason or row.outcome)
        if row.outcome == "failed":
            ET.SubElement(case, "failure", message=reason, type="FALSIFIED").text = reason
        elif row.outcome == "error":  # a broken test: no refutation, the status stays
            ET.SubElement(case, "error", message=reason, type="ERROR").text = reason
        elif row.outcome != "passed":
            ET.SubElement(case, "skipped", message=reason)
        out = [f"outcome: {row.outcome}", f"status: {row.old or '-'} -> {row.new or '-'}"]
        if row.live:
            out.append("live: yes")
        if row.why:
            out.append(f"note: {row.why}")
        if row.not_live:
            out.append(f"not live: {row.not_live}")
        if row.record_path is not None:
            out.append(f"evidence: {row.record_path}")
        ET.SubElement(case, "system-out").text = _text("\n".join(out))
    return failed, errored, skipped


def junit_suites_xml(suites: Iterable[tuple[str, Iterable[Row], float | None]],
                     elapsed_s: float | None = None) -> bytes:
    """The JUnit document for ``pv falsify`` over several contracts: one suite per contract."""
    root = ET.Element("testsuites", name="pv falsify")
    totals = [0, 0, 0, 0]
    for contract_id, rows, suite_s in suites:
        listed = list(rows)
        counts = _suite(root, contract_id, listed, suite_s)
        totals = [totals[0] + len(listed), *(a + b for a, b in zip(totals[1:], counts))]
    for name, value in zip(("tests", "failures", "errors", "skipped"), totals):
        root.set(name, str(value))
    if elapsed_s is not None:
        root.set("time", f"{elapsed_s:.3f}")
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def junit_xml(contract_id: str, rows: Iterable[Row], elapsed_s: float | None = None) -> bytes:
    """The JUnit document for one ``pv falsify`` run over one contract."""
    return junit_suites_xml([(contract_id, rows, elapsed_s)], elapsed_s)


def write_junit(path: Path, contract_id: str, rows: Iterable[Row],
                elapsed_s: float | None = None) -> None:
    """Write the report atomically (a viewer never reads half a file)."""
    files.replace_bytes(path, junit_xml(contract_id, rows, elapsed_s))


def write_junit_suites(path: Path, suites: Iterable[tuple[str, Iterable[Row], float | None]],
                       elapsed_s: float | None = None) -> None:
    """``write_junit`` for several contracts (``pv falsify --all``)."""
    files.replace_bytes(path, junit_suites_xml(suites, elapsed_s))
