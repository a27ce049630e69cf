"""JUnit for ``pv falsify``: an errored falsifier is a JUnit error, and ``--all`` writes a suite per contract."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pv.falsify.run import Row
from pv.report.junit import junit_suites_xml, junit_xml


def rows() -> list[Row]:
    return [Row("F-1", "passed", None, {}, "PROPOSED", "PARTIAL_ALGORITHM_LEVEL",
                not_live="device=cuda (measured: cpu)"),
            Row("F-2", "error", "TypeError: bad", {}, "FUNCTIONAL", "FUNCTIONAL",
                why="falsifiers/x.py::test_y errored: TypeError: bad"),
            Row("F-3", "failed", "AssertionError: no", {}, "PROPOSED", "FALSIFIED")]


def test_an_errored_falsifier_is_a_junit_error_not_a_failure_or_a_skip() -> None:
    root = ET.fromstring(junit_xml("demo-v1", rows()))
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("3", "1", "1", "0")
    [suite] = root
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "1", "0")
    cases = {c.get("name"): c for c in suite}
    error = cases["F-2"].find("error")
    assert error is not None and error.get("message") == "TypeError: bad"
    assert cases["F-2"].find("failure") is None and cases["F-2"].find("skipped") is None
    assert "not live: device=cuda (measured: cpu)" in (cases["F-1"].findtext("system-out") or "")


def test_one_suite_per_contract() -> None:
    root = ET.fromstring(junit_suites_xml([("a-v1", rows()[:1], 0.5), ("b-v1", rows()[1:], 1.0)], 1.5))
    assert [s.get("name") for s in root] == ["a-v1", "b-v1"]
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("time")) == ("3", "1", "1", "1.500")
