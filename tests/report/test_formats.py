"""CI output formats: SARIF against the OASIS 2.1.0 schema, GitHub annotations, JUnit through an XML parser."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from pv.cli import run
from pv.contract.findings import Finding
from pv.falsify.run import Row
from pv.report import annotations, junit, sarif
from pv.report.gate import GateFailure

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json")
                    .read_text(encoding="utf-8"))
BAD = ("metadata:\n  version: 1.0\n  description: d\nfalsification_tests:\n"
       "  - {id: F-1, rule: r, prediction: '', test: t, if_fails: f}\n")


def _valid_sarif(log: dict) -> None:
    errors = sorted(Draft4Validator(SCHEMA).iter_errors(log), key=str)
    assert not errors, [e.message for e in errors[:5]]


def test_validate_sarif_matches_the_schema_and_the_findings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.yaml").write_text(BAD, encoding="utf-8")
    assert run(["validate", "--format", "sarif", "c"]) == 1
    log = json.loads(capsys.readouterr().out)
    _valid_sarif(log)
    results = log["runs"][0]["results"]
    assert {(r["ruleId"], r["level"]) for r in results} == {("PV011", "warning"), ("PV013", "error")}
    loc = results[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "c/bad.yaml", "uriBaseId": "%SRCROOT%"}
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        assert rules[r["ruleIndex"]]["shortDescription"]["text"]


def test_sarif_for_odd_file_names_and_no_file(tmp_path):
    notes = [annotations.Annotation(str(tmp_path / "a b\udcff.yaml"), 3, 4, "PV010", "error", "m"),
             annotations.Annotation(None, 1, 1, "gate/regression", "error", "no file")]
    log = sarif.sarif_log(notes)
    _valid_sarif(log)
    text = json.dumps(log, ensure_ascii=False)
    text.encode("utf-8")  # valid UTF-8 whatever the file name
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("file:///") and uri.endswith("a%20b%FF.yaml")
    assert "locations" not in log["runs"][0]["results"][1]


def test_gate_failures_render_in_both_formats(tmp_path):
    failures = [GateFailure("regression", "demo-v1", "F-1", "FUNCTIONAL -> PROPOSED"),
                GateFailure("unsupported", "demo-v1", None, "no evidence, line\nbreak 100%")]
    from pv.contract.model import Contract, Falsifier

    falsifier = Falsifier("F-1", "FUNCTIONAL", at=(("falsification_tests", 0, "id"), 7, 7))
    contract = Contract("demo-v1", "1", tmp_path / "demo-v1.yaml", None, (falsifier,))
    notes = annotations.from_gate_failures(failures, [contract])
    _valid_sarif(sarif.sarif_log(notes))
    lines = annotations.github(notes)
    assert lines[0].startswith("::error file=") and ",line=7,col=1,title=gate/regression::" in lines[0]
    assert ",line=1,col=1," in lines[1]  # a contract-level failure points at the file
    assert lines[0].endswith("::demo-v1/F-1: FUNCTIONAL -> PROPOSED")
    assert lines[1].endswith("::demo-v1: no evidence, line%0Abreak 100%25")


def test_github_annotations_escape_properties(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x,y:z.yaml").write_text(BAD, encoding="utf-8")
    assert run(["validate", "--format", "github", "x,y:z.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("::warning file=x%2Cy%3Az.yaml,line=2,col=3,title=PV011::metadata.version was "
                      "read as the number 1.0: YAML turns an unquoted 1.0 into a float (and 1.10 "
                      "into 1.1); quote it, e.g. version: \"1.0\"")
    assert out[1].startswith("::error file=x%2Cy%3Az.yaml,line=5,col=")
    assert out[-1].startswith("FAILED: 1 file checked")


def _rows() -> list[Row]:
    return [
        Row("F-1", "passed", None, {}, "PROPOSED", "FUNCTIONAL", live=True,
            record_path=Path("evidence/demo/F-1/r.json"), has_requirements=True),
        Row("F-2", "failed", "assert 1 == 2 <\x01&>", {}, "PROPOSED", "FALSIFIED"),
        Row("F-3", "skipped", "needs CUDA", {}, "PROPOSED", "PROPOSED"),
        Row("F-4", "not run", None, {}, None, None),
    ]


def test_junit_is_well_formed_and_counts_right(tmp_path):
    path = tmp_path / "out" / "junit.xml"
    path.parent.mkdir()
    junit.write_junit(path, "demo-v1", _rows(), elapsed_s=1.5)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "4"
    [suite] = root.findall("testsuite")
    assert (suite.get("name"), suite.get("failures"), suite.get("skipped")) == ("demo-v1", "1", "2")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"F-1", "F-2", "F-3", "F-4"}
    failure = cases["F-2"].find("failure")
    assert failure is not None and failure.get("message") == "assert 1 == 2 <&>"
    assert cases["F-3"].find("skipped") is not None and cases["F-1"].find("failure") is None
    out = cases["F-1"].findtext("system-out") or ""
    assert "PROPOSED -> FUNCTIONAL" in out and "evidence/demo/F-1/r.json" in out


@pytest.mark.parametrize("fmt", ["sarif", "github"])
def test_clean_contracts_give_an_empty_report(tmp_path, capsys, fmt):
    good = tmp_path / "good.yaml"
    good.write_text(BAD.replace("prediction: ''", "prediction: p").replace("1.0", '"1.0"'),
                    encoding="utf-8")
    assert run(["validate", "--format", fmt, str(good)]) == 0
    out = capsys.readouterr().out
    if fmt == "sarif":
        log = json.loads(out)
        _valid_sarif(log)
        assert log["runs"][0]["results"] == []
    else:
        assert out.splitlines() == ["ok: 1 file checked, 0 errors, 0 warnings"]


def test_finding_and_annotation_agree():
    f = Finding("a.yaml", 2, 3, ("metadata",), "PV010", "m", "warning")
    [a] = annotations.from_findings([f])
    assert (a.file, a.line, a.column, a.rule, a.level, a.message) == ("a.yaml", 2, 3, "PV010",
                                                                       "warning", "m")


def test_the_schema_check_can_fail():
    log = sarif.sarif_log([annotations.Annotation("a.yaml", 1, 1, "PV010", "error", "m")])
    del log["version"]
    log["runs"][0]["results"][0]["level"] = "fatal"
    assert len(list(Draft4Validator(SCHEMA).iter_errors(log))) >= 2


def test_gate_kinds_are_described():
    from pv.report import gate

    kinds = {gate.REGRESSED, gate.FALSIFIER_REMOVED, gate.CONTRACT_REMOVED, gate.UNSUPPORTED,
             gate.STALE, gate.EVIDENCE, gate.BINDING, gate.INVALID, gate.WEAKENED}
    assert kinds == set(gate.KINDS)
    assert {f"gate/{k}" for k in kinds} == set(sarif.gate_rules())
