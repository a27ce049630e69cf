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
from pv.falsify.store import read_record

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
    assert rec.outcome == "passed" and rec.pv_evidence == 2 and rec.kind == "run"
    assert [t.outcome for t in rec.tests] == ["passed", "skipped"]
    passed = rec.tests[0]
    # Measured from the array the test handed over; the declared device is kept apart.
    assert passed.measured == {"device": "cpu", "dtype": "float32"}
    assert passed.declared == {"device": "cuda:0"} and rec.metrics["score"] == 0.5
    assert passed.environment["python"].count(".") == 2 and passed.environment["torch"] == "not imported"
    assert set(rec.subjects) == {"src/algo.py", "falsifiers/test_demo.py", "contract:demo-v1#FALSIFY-DEMO-002"}
    assert all(len(d) == 64 for d in rec.subjects.values())
    assert rec.git["dirty"] == [] and len(rec.git["commit"]) == 40
    assert rec.claim["tests"] == ["falsifiers/test_demo.py::test_two_algorithm",
                                  "falsifiers/test_demo.py::test_two_live"]
    assert rec.promotion == {"old": "PROPOSED", "new": "PARTIAL_ALGORITHM_LEVEL", "applied": True, "why": None}
    assert rec.previous is None and rec.digest == rec.content_digest() and rec.signature is None
    assert rec.versions["python"].count(".") == 2


def test_live_pass_is_functional_and_algorithm_pass_never_demotes(demo, capsys) -> None:
    demo.behave(two_live="pass-live")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FUNCTIONAL"
    demo.behave(two_live="skip-absent")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FUNCTIONAL"
    paths = demo.records("FALSIFY-DEMO-002")
    assert len(paths) == 2
    # The second record names the first: one chain per falsifier.
    import hashlib

    recs = {p: read_record(p) for p in paths}
    first, second = sorted(paths, key=lambda p: recs[p].finished_at)
    assert recs[second].previous == hashlib.sha256(first.read_bytes()).hexdigest()


def test_declared_facts_never_promote(demo, capsys) -> None:
    """The tests declare device=cuda:0 and a float64 dtype is required: only a measured float64 counts."""
    demo.behave(two_live="pass")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "PARTIAL_ALGORITHM_LEVEL"


def test_a_modified_covered_file_moves_no_status(demo, capsys) -> None:
    (demo.root / "src" / "algo.py").write_text("def algo():\n    return 2\n")
    demo.behave(two_live="pass-live")
    assert run(demo.args()) == 0
    out = capsys.readouterr().out
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] is None
    assert "FALSIFY-DEMO-002: status not moved: written while src/algo.py differed from the commit" in out
    rec = read_record(demo.records("FALSIFY-DEMO-002")[0])
    assert rec.git["dirty"] == ["src/algo.py"] and rec.promotion["new"] == "PROPOSED"
    # Other falsifiers, whose files are committed, still move.
    assert statuses(demo.contract)["FALSIFY-DEMO-001"] == "FUNCTIONAL"


def test_a_changed_claim_is_dirty_but_status_edits_are_not(demo, capsys) -> None:
    assert run(demo.args()) == 0
    capsys.readouterr()
    # pv falsify's own status edits are not committed: the next run still counts.
    demo.behave(two_live="pass-live")
    assert run(demo.args()) == 0
    assert statuses(demo.contract)["FALSIFY-DEMO-002"] == "FUNCTIONAL"
    # An uncommitted change to the claim itself (the requirements) is.
    demo.contract.write_text(demo.contract.read_text().replace("dtype: float64", "dtype: float16"))
    assert run(demo.args("--no-update")) == 0
    latest = max((read_record(p) for p in demo.records("FALSIFY-DEMO-002")), key=lambda r: r.finished_at)
    assert latest.git["dirty"] == ["contracts/demo-v1.yaml (the claim of FALSIFY-DEMO-002)"]


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
    test: falsifiers/test_demo.py::test_four
    if_fails: none
"""
    demo.contract.write_text(text)
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert "unbound falsifier: FALSIFY-DEMO-004" in err
    assert demo.records() == []


def test_a_marked_test_the_contract_does_not_name_is_an_error(demo, capsys) -> None:
    demo.add_test("""
        import pytest

        @pytest.mark.falsifies("FALSIFY-DEMO-001")
        def test_sneaky(falsifier_record):
            pass
    """)
    before = demo.contract.read_bytes()
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert "unnamed test: falsifiers/test_extra.py::test_sneaky is marked for FALSIFY-DEMO-001" in err
    assert demo.records() == [] and demo.contract.read_bytes() == before


def test_a_named_test_that_is_not_marked_is_an_error(demo, capsys) -> None:
    demo.contract.write_text(demo.contract.read_text().replace(
        "test: falsifiers/test_demo.py::test_three", "test: [falsifiers/test_demo.py::test_three, "
        "falsifiers/test_demo.py::test_ghost]"))
    assert run(demo.args()) == 2
    assert "missing test: FALSIFY-DEMO-003's test: names falsifiers/test_demo.py::test_ghost" \
        in capsys.readouterr().err
    assert demo.records() == []


@pytest.mark.parametrize("bad_id", ["FALSIFY/../../x", "A" * 300, "FALSIFY-\x00-1", "..", "with space"])
def test_ids_that_cannot_name_a_folder_fail_before_anything_runs(demo, capsys, bad_id) -> None:
    text = demo.contract.read_text().replace("id: FALSIFY-DEMO-001", f"id: {json.dumps(bad_id)}")
    demo.contract.write_text(text)
    before = demo.contract.read_bytes()
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("cannot name an evidence folder" in err or "error" in err)
    assert not demo.evidence.exists() and demo.contract.read_bytes() == before


def test_a_symlinked_evidence_folder_out_of_the_repository_is_refused(demo, capsys, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere")
    demo.evidence.mkdir()
    (demo.evidence / "demo-v1").symlink_to(outside, target_is_directory=True)
    assert run(demo.args()) == 2
    assert "resolves outside" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


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
    # Measured in the worker that ran the test, carried to the controller in the report.
    passed = [t for t in rec.tests if t.outcome == "passed"]
    assert passed and all(t.measured.get("device") == "cpu" and t.environment for t in passed)


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
    # The contract's lock serialised them: each falsifier's three records form one chain.
    from pv.falsify.store import load_stored
    from pv.report.status import integrity_problems

    for fid in ("FALSIFY-DEMO-001", "FALSIFY-DEMO-002", "FALSIFY-DEMO-003"):
        stored = load_stored(demo.evidence, "demo-v1", fid)
        assert len(stored) == 3
        assert integrity_problems(stored, "demo-v1", fid, demo.root, None) == []


def test_concurrent_status_rewrites_lose_no_update(demo) -> None:
    """Two runs promoting different falsifiers at once: both updates land (the contract is locked)."""
    demo.behave(two_live="pass-live")
    first = [sys.executable, "-m", "pv.cli", *demo.args("--", "-k", "test_two")]
    second = [sys.executable, "-m", "pv.cli", *demo.args("--", "-k", "test_three or test_one")]
    procs = [subprocess.Popen(cmd, cwd=demo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for cmd in (first, second)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert statuses(demo.contract) == {"FALSIFY-DEMO-001": "FUNCTIONAL", "FALSIFY-DEMO-002": "FUNCTIONAL",
                                       "FALSIFY-DEMO-003": "FUNCTIONAL"}


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
