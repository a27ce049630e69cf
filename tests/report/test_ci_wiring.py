"""pv gate --format sarif|github and pv falsify --junit, on the demo repository."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from jsonschema import Draft4Validator

from pv.cli import run

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json")
                    .read_text(encoding="utf-8"))


def test_gate_writes_sarif_and_github_annotations(repo, capsys) -> None:
    assert run(["gate", "--format", "sarif"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert not list(Draft4Validator(SCHEMA).iter_errors(log))
    assert log["runs"][0]["results"] == []
    repo.git("checkout", "-q", "-b", "feature")
    repo.set_status("FALSIFY-DEMO-002", "PROPOSED")
    repo.commit("regress")
    assert run(["gate", "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    assert not list(Draft4Validator(SCHEMA).iter_errors(log))
    [result] = log["runs"][0]["results"]
    assert result["ruleId"] == "gate/regressed" and result["level"] == "error"
    assert "FALSIFY-DEMO-002: PARTIAL_ALGORITHM_LEVEL -> PROPOSED" in result["message"]["text"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == Path(repo.contract).relative_to(repo.root).as_posix()
    assert run(["gate", "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    # At the falsifier's id line, not at the top of the file.
    line = next(i for i, text in enumerate(repo.contract.read_text().splitlines(), 1) if "FALSIFY-DEMO-002" in text)
    assert lines[0].startswith(f"::error file={uri},line={line},col=1,title=gate/regressed::demo-v1/"
                               "FALSIFY-DEMO-002: PARTIAL_ALGORITHM_LEVEL -> PROPOSED")
    assert lines[-1].startswith("pv gate FAILED")


def test_falsify_writes_junit(repo, tmp_path) -> None:
    target = tmp_path / "reports" / "junit.xml"
    target.parent.mkdir()
    done = repo.falsify("--junit", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    root = ET.parse(target).getroot()
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "demo-v1" and suite.get("failures") == "0"
    names = {c.get("name") for c in suite.findall("testcase")}
    assert names == {"FALSIFY-DEMO-001", "FALSIFY-DEMO-002", "FALSIFY-DEMO-003"}
    skipped = {c.get("name") for c in suite.findall("testcase") if c.find("skipped") is not None}
    assert "FALSIFY-DEMO-003" in skipped


def test_status_marks_invalid_contracts_and_statuses_off_the_ladder(repo, capsys) -> None:
    text = repo.contract.read_text()
    text = text.replace("  description: demo contract for pv falsify\n",
                        "  description: demo contract for pv falsify\n  status: SHIPPED\n")
    head, sep, tail = text.rpartition("    status: ")
    text = head + sep + "proved\n" + tail.split("\n", 1)[1]
    text += "kani_harnesses:\n  - id: K-1\n    obligation: DEMO-OB-001\n"
    repo.contract.write_text(text)
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "  ! fails pv validate: line " in out and "PV030 Kani harness K-1" in out
    assert "  ! metadata.status 'SHIPPED' is not on the ladder" in out
    assert "written 'proved': not on the ladder, counted as PROPOSED" in out
    assert run(["status", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "> **Warning:** fails pv validate" in md
    assert "> **Warning:** metadata.status 'SHIPPED' is not on the ladder" in md
    assert "written 'proved': not on the ladder" in md
