"""``pv falsify`` end to end on a throw-away project: evidence, promotion, exit codes, errors."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pv.cli import run
from pv.falsify.evidence import read_record

pytestmark = pytest.mark.slow


def statuses(path: Path) -> dict[str, str | None]:
    data = yaml.safe_load(path.read_text())
    return {f["id"]: f.get("status") for f in data["falsification_tests"]}


def test_promotes_what_the_evidence_supports(demo, capsys) -> None:
    demo.behave(two_live="skip-absent", three="skip-absent")
    before = demo.contract.read_text()
    assert run(demo.args()) == 0
    out = capsys.readouterr().out
    assert statuses(demo.contract) == {
        "FALSIFY-DEMO-001": "FUNCTIONAL",                # passed, no requirements
        "FALSIFY-DEMO-002": "PARTIAL_ALGORITHM_LEVEL",   # CPU pass, live test skipped
        "FALSIFY-DEMO-003": "BLOCKER_FIXTURE_ABSENT",    # only skipped for a fixture
    }
    # Progress lines name each falsifier; the table shows old -> new.
    assert "FALSIFY-DEMO-002  skipped  " in out and "fixture absent: no GPU here" in out
    assert "PROPOSED -> BLOCKER_FIXTURE_ABSENT" in out
    # Only status lines changed; comments, quotes and layout are kept.
    after = demo.contract.read_text()
    delta = [ln for ln in difflib.ndiff(before.splitlines(), after.splitlines()) if ln[:1] in "+-"]
    assert delta == [
        "-     status: PROPOSED   # untouched comment",
        "+     status: FUNCTIONAL   # untouched comment",
        "+     status: PARTIAL_ALGORITHM_LEVEL",
        "-     status: 'PROPOSED'",
        "+     status: 'BLOCKER_FIXTURE_ABSENT'",
    ]
    assert "    status: PARTIAL_ALGORITHM_LEVEL\n" in after
    # One record per falsifier, each with its tests and facts.
    assert [len(demo.records(f"FALSIFY-DEMO-00{i}")) for i in (1, 2, 3)] == [1, 1, 1]
    rec = read_record(demo.records("FALSIFY-DEMO-002")[0])
    assert rec.outcome == "passed" and not rec.live
    assert [t.outcome for t in rec.tests] == ["passed", "skipped"]
    assert rec.facts["weights"] == "synthetic" and rec.metrics["score"] == 0.5
    assert set(rec.file_hashes) == {"src/algo.py"} and len(rec.file_hashes["src/algo.py"]) == 64
    assert rec.promotion == {"old": "PROPOSED", "new": "PARTIAL_ALGORITHM_LEVEL", "applied": True}
    assert rec.versions["python"].count(".") == 2


def test_live_pass_is_functional_and_algorithm_pass_never_demotes(demo, capsys) -> None:
    demo.behave(two_live="pass-live")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FUNCTIONAL"
    demo.behave(two_live="skip-absent")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FUNCTIONAL"
    assert len(demo.records("FALSIFY-DEMO-002")) == 2


def test_any_failure_falsifies_and_exits_1(demo, capsys) -> None:
    demo.behave(two_live="fail")
    assert run(demo.args()) == 1
    out = capsys.readouterr().out
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FALSIFIED"
    assert "FALSIFY-DEMO-002: failed: AssertionError: two_live refuted" in out
    rec = read_record(demo.records("FALSIFY-DEMO-002")[0])
    assert rec.outcome == "failed" and rec.promotion["new"] == "FALSIFIED"


def test_no_update_records_but_leaves_the_contract(demo, capsys) -> None:
    before = demo.contract.read_bytes()
    assert run(demo.args("--no-update")) == 0
    assert demo.contract.read_bytes() == before
    recs = [read_record(p) for p in demo.records()]
    assert len(recs) == 3 and all(r.promotion["applied"] is False for r in recs)


def test_orphan_marker_is_an_error_and_nothing_runs(demo, capsys) -> None:
    demo.add_test("""
        import pytest

        @pytest.mark.falsifies("FALSIFY-NOBODY-009")
        def test_orphan():
            pass
    """)
    before = demo.contract.read_bytes()
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert "orphan marker: FALSIFY-NOBODY-009 is in no contract" in err
    assert "test_extra.py::test_orphan" in err
    assert demo.records() == [] and demo.contract.read_bytes() == before


def test_unbound_falsifier_is_an_error(demo, capsys) -> None:
    text = demo.contract.read_text() + """  - id: FALSIFY-DEMO-004
    rule: four
    prediction: nobody tests me
    test: none
    if_fails: none
"""
    demo.contract.write_text(text)
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert "unbound falsifier: FALSIFY-DEMO-004" in err
    assert demo.records() == []


def test_unknown_contract_and_bad_pytest_arguments(demo, capsys) -> None:
    assert run(["falsify", "--contract", "nope", "--contracts", str(demo.root / "contracts")]) == 2
    assert "no contract with id 'nope'" in capsys.readouterr().err
    assert run(demo.args("--", "--no-such-pytest-option")) == 2
    assert "pytest could not run the falsifiers" in capsys.readouterr().err
    assert run(demo.args("--", "-k", "no_test_matches_this")) == 2
    assert "no test bound to contract demo-v1 ran" in capsys.readouterr().err
    assert demo.records() == []


def test_xdist_delivers_every_workers_evidence(demo, capsys) -> None:
    demo.behave(two_live="skip-absent", three="fail")
    assert run(demo.args("--format", "json", "--", "-n", "2")) == 1
    data = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in data["falsifiers"]] == ["passed", "passed", "failed"]
    rec = read_record(demo.records("FALSIFY-DEMO-002")[0])
    assert sorted(t.nodeid.split("::")[1] for t in rec.tests) == ["test_two_algorithm", "test_two_live"]
    assert all(t.facts.get("device") == "cpu" for t in rec.tests)


def test_in_process_run(demo, capsys) -> None:
    assert run(demo.args("--in-process", "--no-update")) == 0
    assert len(demo.records()) == 3


def test_concurrent_runs_never_overwrite_each_other(demo) -> None:
    cmd = [sys.executable, "-m", "pv.cli", *demo.args("--no-update")]
    procs = [subprocess.Popen(cmd, cwd=demo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    paths = demo.records()
    assert len(paths) == 9 and len({p.name for p in paths}) == 9
    for p in paths:
        read_record(p)  # every one complete and valid


def test_metadata_status_follows_the_weakest_falsifier(demo, capsys) -> None:
    text = demo.contract.read_text().replace("  description: demo contract for pv falsify\n",
                                             "  description: demo contract for pv falsify\n  status: PROPOSED\n")
    demo.contract.write_text(text)
    demo.behave(two_live="skip-absent", three="pass")
    assert run(demo.args()) == 0
    assert "metadata.status: PROPOSED -> PARTIAL_ALGORITHM_LEVEL" in capsys.readouterr().out
    assert yaml.safe_load(demo.contract.read_text())["metadata"]["status"] == "PARTIAL_ALGORITHM_LEVEL"
    assert run(["validate", "--strict", str(demo.contract)]) == 0, capsys.readouterr()
    # A free-form contract status (not on the ladder) is left to its author.
    demo.contract.write_text(text.replace("  status: PROPOSED\n", "  status: ACTIVE\n", 1))
    assert run(demo.args()) == 0
    assert yaml.safe_load(demo.contract.read_text())["metadata"]["status"] == "ACTIVE"
