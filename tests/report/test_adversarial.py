"""Every way to raise a status without the evidence: each edits a clean, honest tree, and the
gate must exit 1 with a one-line reason naming the falsifier.

The honest path (``pv falsify``, commit, ``pv gate``) passing is pinned in ``test_gate``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pv.cli import run

REPO = Path(__file__).resolve().parents[2]
NEXT_RUNG = {"FALSIFIED": "PROPOSED", "PROPOSED": "BLOCKER_FIXTURE_ABSENT",
             "BLOCKER_FIXTURE_ABSENT": "PARTIAL_ALGORITHM_LEVEL", "PARTIAL_ALGORITHM_LEVEL": "FUNCTIONAL",
             "FUNCTIONAL": "DISCHARGED"}


def failing(capsys, fid: str, kind: str, *args: str) -> str:
    code = run(["gate", *args])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(f"{kind}: ") and f"/{fid}: " in ln]
    assert code == 1 and lines, out
    return lines[0]


@pytest.mark.parametrize(("fid", "raised"), [
    ("FALSIFY-DEMO-001", "DISCHARGED"),               # FUNCTIONAL -> DISCHARGED
    ("FALSIFY-DEMO-002", "FUNCTIONAL"),               # PARTIAL -> FUNCTIONAL
    ("FALSIFY-DEMO-003", "PARTIAL_ALGORITHM_LEVEL"),  # BLOCKER -> PARTIAL
])
def test_raising_a_status_by_hand(repo, capsys, fid, raised) -> None:
    repo.set_status(fid, raised)
    line = failing(capsys, fid, "unsupported")
    assert raised in line


def test_functional_to_discharged_by_hand_even_with_a_live_pass(repo, capsys) -> None:
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("live pass")
    repo.set_status("FALSIFY-DEMO-002", "DISCHARGED")
    line = failing(capsys, "FALSIFY-DEMO-002", "unsupported")
    assert "no discharge record (pv discharge) stands" in line


def test_changing_a_records_facts(repo, capsys) -> None:
    path = repo.record("FALSIFY-DEMO-002")
    data = json.loads(path.read_text())
    data["tests"][0]["measured"]["dtype"] = "float64"   # float32 -> float64: would meet the requirement
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-002", "evidence")
    assert "does not match its digest" in line or "was changed" in line
    failing(capsys, "FALSIFY-DEMO-002", "unsupported")


def test_changing_a_records_facts_and_its_digest(repo, capsys) -> None:
    """Recomputing the digest makes the record self-consistent; the baseline still has the old bytes."""
    from pv.falsify.records import from_dict

    path = repo.record("FALSIFY-DEMO-002")
    data = json.loads(path.read_text())
    data["tests"][0]["measured"]["dtype"] = "float64"
    forged = from_dict({**data, "digest": "0" * 64}).sealed(None)
    path.write_text(forged.to_json())
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-002", "evidence")
    assert "of the baseline was changed; evidence is append-only" in line


def test_deleting_the_newest_failing_record(repo, capsys) -> None:
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.behave(two_live="fail", three="skip-absent")
    assert repo.falsify().returncode == 1
    repo.commit("a live pass, then a failure")
    newest = repo.record("FALSIFY-DEMO-002")
    assert json.loads(newest.read_text())["outcome"] == "failed"
    newest.unlink()
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-002", "evidence")
    assert "was removed" in line


def test_copying_a_record_from_another_falsifier(repo, capsys) -> None:
    source = repo.record("FALSIFY-DEMO-001")  # a FUNCTIONAL-level pass (no requirements)
    shutil.copy(source, repo.evidence / "demo-v1" / "FALSIFY-DEMO-003" / source.name)
    repo.set_status("FALSIFY-DEMO-003", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-003", "evidence")
    assert "misplaced record" in line and "is a record of demo-v1/FALSIFY-DEMO-001" in line
    failing(capsys, "FALSIFY-DEMO-003", "unsupported")


def test_a_record_from_a_dirty_tree(repo, capsys) -> None:
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 'not what was committed'\n")
    repo.behave(two_live="pass-live", three="skip-absent")
    done = repo.falsify()
    assert "status not moved: written while src/algo.py differed from the commit" in done.stdout
    repo.git("checkout", "--", "src/algo.py")
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-002", "unsupported")
    assert "written while src/algo.py differed from the commit" in line


def test_a_marked_test_the_contract_does_not_name(repo, capsys) -> None:
    (repo.root / "falsifiers" / "test_sneaky.py").write_text(
        "import pytest\n\n\n@pytest.mark.falsifies('FALSIFY-DEMO-002')\ndef test_always_passes():\n    pass\n")
    line = failing(capsys, "FALSIFY-DEMO-002", "binding")
    assert "test_sneaky.py::test_always_passes is marked for it, but its test: does not name it" in line


def test_a_record_made_before_the_requirements_tightened(repo, capsys) -> None:
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("FUNCTIONAL on float64")
    repo.contract.write_text(repo.contract.read_text().replace("dtype: float64", "dtype: bfloat16"))
    line = failing(capsys, "FALSIFY-DEMO-002", "unsupported")
    assert "dtype=bfloat16 (measured: float64)" in line


def test_unfalsifying_by_hand(repo, capsys) -> None:
    repo.behave(two_live="fail", three="skip-absent")
    assert repo.falsify().returncode == 1
    repo.commit("refuted")
    repo.set_status("FALSIFY-DEMO-002", "PROPOSED")
    line = failing(capsys, "FALSIFY-DEMO-002", "unsupported")
    assert "the latest counted run failed and nothing passed since" in line


def test_a_stored_live_flag_is_not_believed(repo, capsys) -> None:
    """A format-1 record saying ``live: true`` (what older pv trusted) backs nothing now."""
    legacy = sorted((REPO / "evidence" / "trace-attn-sub-stages-v1" / "FALSIFY-ATTN-SUB-003").glob("*.json"))
    data = json.loads(legacy[-1].read_text()) if legacy else None
    if data is None or data.get("pv_evidence") != 1:
        data = json.loads(next(p for p in (REPO / "evidence").rglob("*.json")
                               if json.loads(p.read_text()).get("pv_evidence") == 1).read_text())
    data.update(contract_id="demo-v1", falsifier_id="FALSIFY-DEMO-002", live=True, outcome="passed",
                finished_at="2030-01-01T00:00:00.000000Z", file_hashes={})
    for t in data["tests"]:
        t.update(outcome="passed", reason=None, live=True, nodeid="falsifiers/test_demo.py::test_two_live",
                 facts={"device": "cpu", "dtype": "float64"})
    (repo.evidence / "demo-v1" / "FALSIFY-DEMO-002" / "20300101T000000.000000Z-x-1-aaaaaaaa.json").write_text(
        json.dumps(data))
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    line = failing(capsys, "FALSIFY-DEMO-002", "evidence")
    assert "is in format 1, which pv no longer writes" in line
    failing(capsys, "FALSIFY-DEMO-002", "unsupported")


def test_a_status_raised_on_stale_evidence(repo, capsys) -> None:
    repo.behave(two_live="pass-live", three="skip-absent")
    done = repo.falsify("--no-update")
    assert done.returncode == 0
    repo.commit("live evidence, status not written")
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 3\n")
    repo.commit("the algorithm changed since")
    repo.git("checkout", "-q", "-b", "raise")
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")
    repo.commit("raise the status on the old evidence")
    line = failing(capsys, "FALSIFY-DEMO-002", "unsupported")
    assert "FUNCTIONAL but its live evidence" in line and "is stale: src/algo.py changed since it ran" in line
    assert "rerun pv falsify where device=cpu, dtype=float64 holds" in line
    # Under the weaker policy a stale FUNCTIONAL may stand, but never be raised on stale evidence.
    (repo.root / "pyproject.toml").write_text(
        '[tool.pv]\nstale-evidence = "warn"\nstale-evidence-by = "Ada"\n'
        'stale-evidence-reason = "GPU runs are weekly"\n')
    line = failing(capsys, "FALSIFY-DEMO-002", "stale")
    assert "raised in this change on" in line and "src/algo.py changed since it ran" in line


# --------------------------------------------------------------------------- this project's contract


def _copy_project(dest: Path) -> Path:
    """This repository's contracts, evidence, falsifiers and covered sources in a fresh git repo."""
    import subprocess

    from pv.contract.model import load_contracts

    contracts = load_contracts([REPO / "contracts"])
    rels = {"contracts", "evidence", "falsifiers"}
    rels |= {p for c in contracts for f in c.falsifiers for p in f.covered_files}
    for rel in sorted(rels):
        src = REPO / rel
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", ".lock"))
        elif src.is_file():
            shutil.copy(src, dest / rel)
    git = ["git", "-C", str(dest), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], check=True)
    return dest


def test_this_projects_statuses_are_backed_and_cannot_be_raised(tmp_path, capsys, monkeypatch) -> None:
    from pv.contract.model import load_contracts
    from pv.falsify.rewrite import rewrite_statuses

    root = _copy_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PV_EVIDENCE_KEY", raising=False)
    code = run(["gate", "--baseline", "HEAD"])
    out = capsys.readouterr().out
    assert code == 0, out
    for contract in load_contracts([root / "contracts"]):
        for f in contract.falsifiers:
            raised = NEXT_RUNG.get(f.status or "PROPOSED")
            if raised is None or raised.startswith("BLOCKER_"):
                continue  # a blocker claims no progress and may be set by hand (docs/falsify.md)
            original = contract.path.read_bytes()
            rewrite_statuses(contract.path, {f.id: raised})
            code = run(["gate", "--baseline", "HEAD"])
            out = capsys.readouterr().out
            assert code == 1 and f"{contract.id}/{f.id}: " in out, (f.id, raised, out)
            contract.path.write_bytes(original)
