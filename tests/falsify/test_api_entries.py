"""The API entry points the commands run, called as a library: data back, nothing printed,
one-line ``PvError`` for bad input (on the throw-away demo project)."""

from __future__ import annotations

import json

import pytest
from demo_project import DemoProject

import pv
from pv.cli import run


def test_falsify_returns_the_report_the_command_prints_and_prints_nothing(demo: DemoProject, capsys) -> None:
    seen: list[str] = []
    finished: list[str] = []
    report = pv.falsify_contracts("demo-v1", contracts_dir=demo.root / "contracts",
                                  falsifiers_dir=demo.root / "falsifiers", evidence_dir=demo.evidence,
                                  on_output=seen.append, on_contract=lambda r: finished.append(r.contract.id))
    assert capsys.readouterr() == ("", ""), "the library printed"
    assert report.exit_code == 0 and report.ok and finished == ["demo-v1"]
    assert {r.falsifier_id: r.outcome for r in report.rows} == {
        "FALSIFY-DEMO-001": "passed", "FALSIFY-DEMO-002": "passed", "FALSIFY-DEMO-003": "passed"}
    assert any(line.startswith("pv falsify: demo-v1 (3 falsifiers)") for line in seen)
    assert len(report.records) == 3 and all(p.is_file() for p in report.records)
    # The command prints the same report's JSON view.
    assert run([*demo.args("--format", "json", "--no-update")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed.keys() == report.to_json().keys()
    assert [f["outcome"] for f in printed["falsifiers"]] == [f["outcome"] for f in report.to_json()["falsifiers"]]


@pytest.mark.parametrize("call, words", [
    (lambda d: pv.falsify_contracts(), "takes --contract ID|PATH or --all"),
    (lambda d: pv.falsify_contracts("demo-v1", all=True), "takes --contract ID|PATH or --all"),
    (lambda d: pv.status(contract="nope"), "no contract with id 'nope' (known: demo-v1)"),
    (lambda d: pv.discharge("FALSIFY-DEMO-001", contract="demo-v1", by=" ", reason="r"), "--by (who) and --reason"),
    (lambda d: pv.scaffold("nope"), "nope: no such contract"),
    (lambda d: pv.schema(force=True), "--force only goes with --write"),
    (lambda d: pv.graph([d.root / "absent"]), "no such file or directory"),
])
def test_bad_input_is_one_line(demo: DemoProject, call, words) -> None:
    with pytest.raises(pv.PvError) as info:
        call(demo)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_status_graph_coverage_scaffold_and_schema_return_data(demo: DemoProject) -> None:
    status = pv.status(contract="demo-v1")
    assert [c.id for c in status.contracts] == ["demo-v1"]
    assert pv.graph().to_json()["nodes"] == ["demo-v1"]
    gaps = pv.coverage()
    assert gaps.complete and not gaps.failed(strict=True) and gaps.to_json()["contracts"][0]["id"] == "demo-v1"
    done = pv.scaffold("demo-v1")
    assert done.added == () and done.to_json()["test_file"] == "falsifiers/test_demo_v1.py"
    assert json.loads(pv.schema().text)["$schema"].startswith("https://json-schema.org/")
    written = pv.schema(write=demo.root / "schemas")
    assert sorted(w.what for w in written.written) == ["wrote", "wrote"]
    assert written.modeline == "# yaml-language-server: $schema=../schemas/contract.schema.json"
