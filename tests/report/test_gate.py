"""``pv gate``: regressions, removals, baselines from git and from a snapshot, staleness, signing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pv.cli import run


def gate(capsys, *args: str) -> tuple[int, str]:
    code = run(["gate", *args])
    return code, capsys.readouterr().out


def test_the_honest_path_passes(repo, capsys) -> None:
    code, out = gate(capsys)
    assert code == 0, out
    assert "pv gate passed: 3 falsifier(s) in 1 contract(s)" in out
    # A live run, committed, still passes: the promotion is backed.
    repo.behave(two_live="pass-live", three="skip-absent")
    done = repo.falsify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PARTIAL_ALGORITHM_LEVEL -> FUNCTIONAL" in done.stdout
    repo.commit("pv falsify: live pass")
    code, out = gate(capsys)
    assert code == 0, out


def test_status_dropped_on_the_ladder(repo, capsys) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    repo.set_status("FALSIFY-DEMO-002", "PROPOSED")
    repo.commit("regress")
    code, out = gate(capsys)
    assert code == 1
    assert "regressed: demo-v1/FALSIFY-DEMO-002: PARTIAL_ALGORITHM_LEVEL -> PROPOSED" in out


def test_falsifier_and_contract_disappeared(repo, capsys) -> None:
    text = repo.contract.read_text()
    cut = text.index("  - id: FALSIFY-DEMO-003")
    repo.contract.write_text(text[:cut])
    code, out = gate(capsys)  # on main with a dirty tree: compared with HEAD
    assert code == 1
    assert "falsifier-removed: demo-v1/FALSIFY-DEMO-003: was BLOCKER_FIXTURE_ABSENT, now gone" in out
    repo.contract.unlink()
    (repo.root / "contracts" / "other-v1.yaml").write_text(text.replace("demo contract", "other"))
    code, out = gate(capsys, "--baseline", "HEAD")
    assert "contract-removed: demo-v1: contract with 3 falsifier(s) is gone" in out and code == 1


def test_stale_evidence_fails_under_strict_or_when_a_status_rises(repo, capsys) -> None:
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 42\n")
    repo.commit("change the algorithm")
    code, out = gate(capsys)  # status unchanged: stale evidence is reported, not fatal
    assert code == 0, out
    code, out = gate(capsys, "--strict")
    assert code == 1
    assert "stale: demo-v1/FALSIFY-DEMO-002: PARTIAL_ALGORITHM_LEVEL rests on evidence/demo-v1/" in out
    assert "but src/algo.py changed since it ran; rerun pv falsify" in out


def test_snapshot_file_baseline(repo, capsys, tmp_path_factory) -> None:
    snap = tmp_path_factory.mktemp("snap") / "status.json"
    assert run(["status", "--format", "json"]) == 0
    snap.write_text(capsys.readouterr().out)
    repo.set_status("FALSIFY-DEMO-001", "FALSIFIED")
    code, out = gate(capsys, "--baseline", str(snap))
    assert code == 1 and f"baseline snapshot {snap}" in out
    assert "regressed: demo-v1/FALSIFY-DEMO-001: FUNCTIONAL -> FALSIFIED" in out
    # The snapshot remembers the evidence too: a deleted record is caught without git.
    os.unlink(repo.record("FALSIFY-DEMO-003"))
    code, out = gate(capsys, "--baseline", str(snap))
    assert "evidence: demo-v1/FALSIFY-DEMO-003: record evidence/demo-v1/FALSIFY-DEMO-003/" in out
    bad = snap.with_name("bad.json")
    bad.write_text(json.dumps({"kind": "other"}))
    assert run(["gate", "--baseline", str(bad)]) == 2
    assert "not a snapshot written by `pv status --format json`" in capsys.readouterr().err
    deep = snap.with_name("deep.json")
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert run(["gate", "--baseline", str(deep)]) == 2
    assert "nested more than 64 deep" in capsys.readouterr().err


def test_default_baseline_rules(repo, capsys) -> None:
    first = repo.git("rev-parse", "HEAD")
    # On main, clean tree: compared with HEAD^ (the state before the last commit).
    repo.set_status("FALSIFY-DEMO-002", "PROPOSED")
    repo.commit("regress on main")
    code, out = gate(capsys)
    assert code == 1 and f"against baseline git {first[:12]}" in out
    # On a branch: compared with the merge base with main.
    repo.git("checkout", "-q", "-b", "feature", first)
    repo.set_status("FALSIFY-DEMO-003", "PROPOSED")
    repo.commit("regress on a branch")
    code, out = gate(capsys)
    assert f"against baseline git {first[:12]}" in out
    assert "regressed: demo-v1/FALSIFY-DEMO-003" in out and "FALSIFY-DEMO-002" not in out


def test_bad_baselines_and_no_git(repo, capsys, tmp_path_factory) -> None:
    assert run(["gate", "--baseline", "no-such-ref"]) == 2
    assert "neither a file nor a git revision" in capsys.readouterr().err
    outside = tmp_path_factory.mktemp("nogit")
    shutil.copytree(repo.root / "contracts", outside / "contracts")
    here = os.getcwd()
    os.chdir(outside)
    try:
        assert run(["gate"]) == 2
        assert "not a git checkout" in capsys.readouterr().err
    finally:
        os.chdir(here)


@pytest.mark.parametrize("where", ["contract", "falsifier"])
def test_a_snapshot_with_ids_that_are_not_strings_is_malformed(repo, capsys, tmp_path_factory, where) -> None:
    """Not read as a removed contract (exit 1): refused as a malformed baseline (exit 2)."""
    snap = tmp_path_factory.mktemp("snap") / "status.json"
    assert run(["status", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    target = data["contracts"][0] if where == "contract" else data["contracts"][0]["falsifiers"][0]
    target["id"] = {"a": 1}
    snap.write_text(json.dumps(data))
    assert run(["gate", "--baseline", str(snap)]) == 2
    err = capsys.readouterr().err
    assert "malformed baseline snapshot" in err and "id {'a': 1} is not a string" in err


@pytest.mark.parametrize("damage, words", [
    (lambda claim, fid: claim["falsifiers"].__setitem__(fid, None), "is not an object"),
    (lambda claim, fid: claim["falsifiers"][fid].__setitem__("tests", [["x"]]), "tests is not a list of text"),
    (lambda claim, fid: claim["falsifiers"][fid].__setitem__("live_requirements", {"device": "cuda"}),
     "device is not a list of values"),
    (lambda claim, fid: claim.__setitem__("equations", []), "equations is not an object"),
])
def test_a_snapshot_whose_claims_are_not_shaped_as_claims_is_malformed(repo, capsys, tmp_path_factory, damage,
                                                                       words) -> None:
    """Found by fuzzing: a null falsifier claim crashed the comparison (an internal error)."""
    snap = tmp_path_factory.mktemp("snap") / "status.json"
    assert run(["status", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    contract = data["contracts"][0]
    damage(contract["claim"], contract["falsifiers"][0]["id"])
    snap.write_text(json.dumps(data))
    assert run(["gate", "--baseline", str(snap)]) == 2
    err = capsys.readouterr().err
    assert "malformed baseline snapshot" in err and words in err and len(err.strip().splitlines()) == 1


def test_signed_records_and_require_signed(repo, capsys, monkeypatch) -> None:
    # The template's records are unsigned (made without a key).
    monkeypatch.setenv("PV_EVIDENCE_KEY", "ci-secret")
    code, out = gate(capsys, "--require-signed")
    assert code == 1
    assert "unsupported: demo-v1/FALSIFY-DEMO-001: FUNCTIONAL but no passing live record: not signed" in out
    # Records made in CI, with the key, are accepted.
    repo.behave(two_live="skip-absent", three="skip-absent")
    done = repo.falsify(env={"PV_EVIDENCE_KEY": "ci-secret"})
    assert done.returncode == 0, done.stderr
    repo.commit("signed evidence")
    code, out = gate(capsys, "--require-signed")
    assert code == 0, out
    # The same records checked with another key are not trusted.
    monkeypatch.setenv("PV_EVIDENCE_KEY", "laptop")
    code, out = gate(capsys, "--require-signed")
    assert code == 1 and "not signed with the evidence key" in out
    monkeypatch.delenv("PV_EVIDENCE_KEY")
    assert run(["gate", "--require-signed"]) == 2
    assert "needs the signing key in PV_EVIDENCE_KEY" in capsys.readouterr().err


def test_the_api_and_the_command_agree_on_a_tampered_signature(repo, capsys, monkeypatch) -> None:
    import pv

    repo.behave(two_live="skip-absent", three="skip-absent")
    assert repo.falsify(env={"PV_EVIDENCE_KEY": "ci-secret"}).returncode == 0
    path = repo.record("FALSIFY-DEMO-001")
    data = json.loads(path.read_text())
    data["signature"]["value"] = "0" * 64  # altered before it was ever committed
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    repo.commit("signed evidence, one signature altered")
    monkeypatch.setenv("PV_EVIDENCE_KEY", "ci-secret")
    code, out = gate(capsys, "--baseline", "HEAD")
    assert code == 1 and "its signature does not verify" in out
    result = pv.gate(baseline="HEAD")
    assert not result.ok and [f.format() for f in result.failures] == [
        ln for ln in out.splitlines() if ln.split(":", 1)[0] in ("evidence", "unsupported")]


def test_binding_check_needs_no_import(repo, capsys) -> None:
    (repo.root / "falsifiers" / "test_more.py").write_text(
        "import pytest\n\n@pytest.mark.falsifies('FALSIFY-DEMO-003')\ndef test_unnamed():\n    pass\n")
    code, out = gate(capsys)
    assert code == 1
    assert "binding: demo-v1/FALSIFY-DEMO-003: falsifiers/test_more.py::test_unnamed is marked for it" in out


def test_json_output(repo, capsys) -> None:
    repo.set_status("FALSIFY-DEMO-003", "FUNCTIONAL")
    code, out = gate(capsys, "--format", "json")
    data = json.loads(out)
    assert code == 1 and not data["ok"]
    assert {"kind": "unsupported", "contract": "demo-v1", "falsifier": "FALSIFY-DEMO-003"}.items() \
        <= data["failures"][0].items()


REPO = Path(__file__).resolve().parents[2]


def test_contract_status_raised_by_hand(repo, capsys) -> None:
    """metadata.status above the weakest falsifier is a claim no evidence carries."""
    text = repo.contract.read_text()
    repo.contract.write_text(text.replace("  description: demo contract for pv falsify\n",
                                          "  description: demo contract for pv falsify\n  status: FUNCTIONAL\n"))
    code, out = gate(capsys)
    assert code == 1
    assert ("unsupported: demo-v1: metadata.status FUNCTIONAL is ahead of its falsifiers: "
            "the contract stands at BLOCKER_FIXTURE_ABSENT; pv falsify sets it") in out
    # Behind its falsifiers is only cautious; a word off the ladder claims no rung.
    for word in ("PROPOSED", "ACTIVE"):
        repo.contract.write_text(text.replace("  description: demo contract for pv falsify\n",
                                              f"  description: demo contract for pv falsify\n  status: {word}\n"))
        code, out = gate(capsys)
        assert code == 0, out


def test_a_rerun_without_the_live_target_lowers_a_stale_functional(repo, capsys) -> None:
    """pv falsify judges as the gate does: stale live evidence backs no FUNCTIONAL, so a run that
    cannot reach the live target lowers the status, and the gate names why."""
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("live pass")
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 7\n")
    repo.commit("change the algorithm")
    repo.behave(two_live="skip-absent", three="skip-absent")  # the live target is not here
    done = repo.falsify()
    assert done.returncode == 0 and "FUNCTIONAL -> PARTIAL_ALGORITHM_LEVEL" in done.stdout, done.stdout
    repo.commit("rerun where the live target is not")
    code, out = gate(capsys, "--baseline", "HEAD~2")
    assert code == 1
    assert ("regressed: demo-v1/FALSIFY-DEMO-002: FUNCTIONAL -> PARTIAL_ALGORITHM_LEVEL (its live evidence "
            "evidence/demo-v1/FALSIFY-DEMO-002/") in out
    assert "is stale: src/algo.py changed since it ran; rerun pv falsify where device=cpu, dtype=float64 holds" in out
