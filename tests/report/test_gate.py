"""``pv gate``: every failure kind, baselines from git and from a snapshot file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pv.cli import run


def gate(capsys, *args: str) -> tuple[int, str]:
    code = run(["gate", *args])
    return code, capsys.readouterr().out


def test_passes_when_nothing_changed(repo, capsys) -> None:
    code, out = gate(capsys)
    assert code == 0, out
    assert "pv gate passed: 3 falsifier(s) in 1 contract(s)" in out


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
    (repo.root / "contracts" / "other-v1.yaml").write_text(text.replace("gate demo", "other"))
    code, out = gate(capsys, "--baseline", "HEAD")
    assert "contract-removed: demo-v1: contract with 3 falsifier(s) is gone" in out and code == 1


def test_hand_edited_promotions_are_unsupported(repo, capsys) -> None:
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")      # only an algorithm-level pass on record
    repo.set_status("FALSIFY-DEMO-003", "PARTIAL_ALGORITHM_LEVEL")  # only a skip on record
    code, out = gate(capsys)
    assert code == 1
    assert "unsupported: demo-v1/FALSIFY-DEMO-002: FUNCTIONAL but no passing live record" in out
    assert "unsupported: demo-v1/FALSIFY-DEMO-003: PARTIAL_ALGORITHM_LEVEL but no passing record" in out


def test_a_later_failure_voids_the_promotion(repo, capsys) -> None:
    from tests_falsify_records import make_record

    from pv.falsify.evidence import write_record

    write_record(repo.evidence, make_record("failed", falsifier="FALSIFY-DEMO-001",
                                            finished="2026-11-26T00:00:00.000000Z"))
    code, out = gate(capsys)
    assert code == 1
    assert "FUNCTIONAL but no passing live record after the latest failing record" in out


def test_stale_evidence_fails_only_under_strict(repo, capsys) -> None:
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 42\n")
    code, out = gate(capsys)
    assert code == 0, out
    code, out = gate(capsys, "--strict")
    assert code == 1
    assert "stale: demo-v1/FALSIFY-DEMO-001: src/algo.py changed since evidence/demo-v1/FALSIFY-DEMO-001/" in out


def test_snapshot_file_baseline(repo, capsys, tmp_path_factory) -> None:
    snap = tmp_path_factory.mktemp("snap") / "status.json"
    assert run(["status", "--format", "json"]) == 0
    snap.write_text(capsys.readouterr().out)
    repo.set_status("FALSIFY-DEMO-001", "FALSIFIED")
    code, out = gate(capsys, "--baseline", str(snap))
    assert code == 1 and f"baseline snapshot {snap}" in out
    assert "regressed: demo-v1/FALSIFY-DEMO-001: FUNCTIONAL -> FALSIFIED" in out
    bad = snap.with_name("bad.json")
    bad.write_text(json.dumps({"kind": "other"}))
    assert run(["gate", "--baseline", str(bad)]) == 2
    assert "not a snapshot written by `pv status --format json`" in capsys.readouterr().err


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
    import os
    here = os.getcwd()
    os.chdir(outside)
    try:
        assert run(["gate"]) == 2
        assert "not a git checkout" in capsys.readouterr().err
    finally:
        os.chdir(here)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (REPO / "evidence" / "trace-attn-sub-stages-v1").is_dir(),
                    reason="no committed evidence for trace-attn-sub-stages-v1 yet")
def test_project_contract_passes_and_a_regressed_copy_fails(repo, capsys) -> None:
    """This project's own contract with its committed evidence passes; a regressed copy fails."""
    from pv.falsify.catalog import load_contract
    from pv.falsify.rewrite import rewrite_statuses

    source = REPO / "contracts" / "trace-attn-sub-stages-v1.yaml"
    contract = load_contract(source)
    repo.contract.unlink()
    shutil.rmtree(repo.evidence)
    target = repo.root / "contracts" / source.name
    shutil.copy(source, target)
    shutil.copytree(REPO / "evidence" / contract.id, repo.evidence / contract.id)
    for rel in {p for f in contract.falsifiers for p in f.file_paths}:
        (repo.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, repo.root / rel)
    repo.commit("the project's contract and evidence")
    code, out = gate(capsys, "--baseline", "HEAD")
    assert code == 0, out
    statuses = {f.id: f.status for f in contract.falsifiers}
    assert statuses["FALSIFY-ATTN-SUB-004"] == "PARTIAL_ALGORITHM_LEVEL"
    # The deliberately regressed copy: a status dropped and a promotion without live evidence.
    rewrite_statuses(target, {"FALSIFY-ATTN-SUB-001": "PROPOSED", "FALSIFY-ATTN-SUB-004": "FUNCTIONAL"})
    code, out = gate(capsys, "--baseline", "HEAD")
    assert code == 1
    assert f"regressed: {contract.id}/FALSIFY-ATTN-SUB-001: {statuses['FALSIFY-ATTN-SUB-001']} -> PROPOSED" in out
    assert f"unsupported: {contract.id}/FALSIFY-ATTN-SUB-004: FUNCTIONAL but no passing live record" in out
