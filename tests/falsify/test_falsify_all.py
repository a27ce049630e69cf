"""``pv falsify --all``, ``--contract PATH``, why a pass is not live, and ``evidence/.gitignore``."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from demo_project import DemoProject

from pv.cli import run

pytestmark = pytest.mark.slow

SECOND = """\
metadata:
  version: 1.0.0
  description: a second demo contract
falsification_tests:
  - id: FALSIFY-SECOND-001
    rule: second
    prediction: it holds too
    test: falsifiers/test_second.py::test_second
    if_fails: it does not
"""

SECOND_TEST = """
import json
from pathlib import Path

import pytest

BEHAVIOUR = json.loads((Path(__file__).parent / "behaviour.json").read_text())


@pytest.mark.falsifies("FALSIFY-SECOND-001")
def test_second(falsifier_record):
    assert BEHAVIOUR.get("second", "pass") == "pass", "second refuted"
"""


def two_contracts(demo: DemoProject) -> DemoProject:
    (demo.root / "contracts" / "second-v1.yaml").write_text(SECOND)
    demo.add_test(SECOND_TEST, name="test_second.py")
    demo.commit("a second contract")
    return demo


def all_args(demo: DemoProject, *extra: str) -> list[str]:
    return ["falsify", "--all", "--contracts", str(demo.root / "contracts"), "--falsifiers",
            str(demo.root / "falsifiers"), "--evidence", str(demo.evidence), *extra]


def status_of(path, fid: str) -> str | None:
    data = yaml.safe_load(path.read_text())
    return next(f.get("status") for f in data["falsification_tests"] if f["id"] == fid)


def test_all_runs_every_contract_with_a_table_each_and_one_summary(demo, capsys) -> None:
    two_contracts(demo)
    demo.behave(second="fail")
    assert run(all_args(demo)) == 1
    out = capsys.readouterr().out
    assert out.index("pv falsify: demo-v1 (3 falsifiers)") < out.index("pv falsify: second-v1 (1 falsifiers)")
    assert sum(ln.startswith("falsifier ") and " outcome " in ln for ln in out.splitlines()) == 2
    assert out.rstrip().splitlines()[-1] == ("pv falsify --all: 2 contract(s), 4 falsifier(s): 3 passed, "
                                             "1 failed, 0 errored; 4 evidence record(s) written")
    assert status_of(demo.root / "contracts" / "second-v1.yaml", "FALSIFY-SECOND-001") == "FALSIFIED"
    assert status_of(demo.contract, "FALSIFY-DEMO-001") == "FUNCTIONAL"
    demo.behave()
    assert run(all_args(demo, "--format", "json", "--no-update")) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["contract"] for c in data["contracts"]] == ["demo-v1", "second-v1"] and data["exit_code"] == 0


def test_all_stops_at_the_first_trouble_naming_the_contract(demo, capsys) -> None:
    two_contracts(demo)
    (demo.root / "falsifiers" / "test_second.py").write_text("import foo_nope_missing\n" + SECOND_TEST)
    assert run(all_args(demo)) == 2
    captured = capsys.readouterr()
    assert captured.err == ("pv: error: demo-v1: falsifiers/test_second.py cannot be collected: "
                            "ModuleNotFoundError: No module named 'foo_nope_missing'\n")
    assert demo.records() == []


def test_all_and_contract_are_exclusive_and_one_is_needed(demo, capsys) -> None:
    assert run(all_args(demo, "--contract", "demo-v1")) == 2
    err = capsys.readouterr().err
    assert err == "pv: error: pv falsify takes --contract ID|PATH or --all: one of them, not both\n"
    assert run(["falsify", "--contracts", str(demo.root / "contracts")]) == 2
    assert capsys.readouterr().err == err
    assert demo.records() == []


def test_contract_may_be_a_path(demo, capsys, tmp_path_factory) -> None:
    args = demo.args("--no-update")
    at = args.index("demo-v1")
    args[at] = "contracts/demo-v1.yaml"  # relative to the working directory, the project root
    assert run(args) == 0
    assert "pv falsify: demo-v1 (3 falsifiers)" in capsys.readouterr().out
    assert len(demo.records()) == 3
    # A contract file outside --contracts runs too; its ids are known to the orphan check.
    two_contracts(demo)
    outside = demo.root / "elsewhere"
    outside.mkdir()
    (demo.root / "contracts" / "second-v1.yaml").rename(outside / "second-v1.yaml")
    demo.commit("the second contract moved")
    args[at] = str(outside / "second-v1.yaml")
    assert run(args) == 0, capsys.readouterr()
    assert "pv falsify: second-v1 (1 falsifiers) from elsewhere/second-v1.yaml" in capsys.readouterr().out
    # The same id under --contracts and in the file given is an error, not a guess.
    (demo.root / "contracts" / "second-v1.yaml").write_text(SECOND)
    assert run(args) == 2
    assert "contract id second-v1 is defined twice" in capsys.readouterr().err


def test_the_table_says_why_a_pass_is_not_live(demo, capsys) -> None:
    assert run(demo.args()) == 0
    out = capsys.readouterr().out
    assert "FALSIFY-DEMO-002: not live: dtype=float64 (measured: float32)\n" in out
    assert "FALSIFY-DEMO-001: not live" not in out  # no requirements: every pass is live
    # A test that hands pv nothing: "not measured", and a hint.
    demo.tests.write_text(demo.tests.read_text().replace(
        "    if what == \"pass-live\":", "    if what == \"nothing\":\n        pass\n    elif what == \"pass-live\":"))
    demo.commit("a test that measures nothing")
    demo.behave(two_algorithm="nothing", two_live="nothing")
    assert run(demo.args("--format", "json")) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["falsifiers"]}
    assert rows["FALSIFY-DEMO-002"]["why_not_live"] == (
        "device=cpu (not measured); dtype=float64 (not measured); the test handed pv nothing to measure: "
        "call falsifier_record.observe(...)")
    assert rows["FALSIFY-DEMO-001"]["why_not_live"] is None
    demo.behave(two_live="pass-live")
    assert run(demo.args("--format", "json")) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["falsifiers"]}
    assert rows["FALSIFY-DEMO-002"]["live"] and rows["FALSIFY-DEMO-002"]["why_not_live"] is None


def test_evidence_gitignore_is_created_once_and_never_replaced(demo, capsys) -> None:
    assert run(demo.args()) == 0
    ignore = demo.evidence / ".gitignore"
    assert "**/.lock" in ignore.read_text().splitlines()
    assert (demo.evidence / "demo-v1" / ".lock").exists()
    # git itself now ignores the lock file, without the project's own .gitignore.
    (demo.root / ".gitignore").write_text("falsifiers/behaviour.json\n__pycache__/\n")
    done = subprocess.run(["git", "-C", str(demo.root), "check-ignore", "-q", "evidence/demo-v1/.lock"],
                          check=False)
    assert done.returncode == 0
    # Readers are unaffected: the records are what they were, and status reads them.
    assert len(demo.records()) == 3
    assert run(["status", "--contract", "demo-v1", str(demo.root / "contracts")]) == 0, capsys.readouterr()
    ignore.write_text("mine\n")
    assert run(demo.args()) == 0
    assert ignore.read_text() == "mine\n"
