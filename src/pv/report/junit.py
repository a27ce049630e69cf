"""JUnit XML for ``pv falsify --junit PATH``: one test case per falsifier.

The shape test-report viewers read (Jenkins, GitLab, GitHub test-report
actions): ``<testsuites><testsuite name=CONTRACT tests= failures= skipped=>``,
one ``<testcase classname=CONTRACT name=FALSIFIER>`` per row, with ``<failure>``
for a refuted prediction, ``<skipped>`` for a test that did not run, and the
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


def junit_xml(contract_id: str, rows: Iterable[Row], elapsed_s: float | None = None) -> bytes:
    """The JUnit document for one ``pv falsify`` run over one contract."""
    rows = list(rows)
    failed = sum(1 for r in rows if r.outcome == "failed")
    skipped = sum(1 for r in rows if r.outcome not in ("passed", "failed"))
    suites = ET.Element("testsuites", name="pv falsify", tests=str(len(rows)),
                        failures=str(failed), errors="0", skipped=str(skipped))
    suite = ET.SubElement(suites, "testsuite", name=_text(contract_id), tests=str(len(rows)),
                          failures=str(failed), errors="0", skipped=str(skipped))
    if elapsed_s is not None:
        suites.set("time", f"{elapsed_s:.3f}")
        suite.set("time", f"{elapsed_s:.3f}")
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=_text(contract_id),
                             name=_text(row.falsifier_id))
        reason = _text(row.reason or row.outcome)
        if row.outcome == "failed":
            ET.SubElement(case, "failure", message=reason, type="FALSIFIED").text = reason
        elif row.outcome != "passed":
            ET.SubElement(case, "skipped", message=reason)
        out = [f"outcome: {row.outcome}", f"status: {row.old or '-'} -> {row.new or '-'}"]
        if row.live:
            out.append("live: yes")
        if row.why:
            out.append(f"note: {row.why}")
        if row.record_path is not None:
            out.append(f"evidence: {row.record_path}")
        ET.SubElement(case, "system-out").text = _text("\n".join(out))
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write_junit(path: Path, contract_id: str, rows: Iterable[Row],
                elapsed_s: float | None = None) -> None:
    """Write the report atomically (a viewer never reads half a file)."""
    files.replace_bytes(path, junit_xml(contract_id, rows, elapsed_s))
