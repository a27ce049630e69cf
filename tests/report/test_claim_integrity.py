"""Claims that cannot be weakened unseen: the six ways a hurried user could change a claim under the
gate, each tried on a small repository of their own (``softmax_project``) and each failing the
default ``pv gate`` (or refused earlier) with one line naming the claim, the change and what would
make it pass; and the honest path, which still passes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from pv.cli import run

sys.path.insert(0, str(Path(__file__).resolve().parent))

from softmax_project import BROKEN_OPS, OPS, SoftmaxProject, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("softmax") / "repo"
    make_project(root)
    return root


@pytest.fixture
def sm(_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftmaxProject:
    root = tmp_path / "repo"
    shutil.copytree(_template, root, symlinks=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("PV_EVIDENCE_KEY", raising=False)
    return SoftmaxProject(root)


def gate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(["gate", *args])
    return code, capsys.readouterr().out


def lines_of(out: str, kind: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(f"{kind}: ")]


def test_the_honest_path_passes(sm, capsys) -> None:
    sm.ops.write_text(OPS.replace("z.max(axis=-1, keepdims=True)", "np.max(z, axis=-1, keepdims=True)"))
    sm.commit("a faster max")
    done = sm.falsify()
    assert done.returncode == 0, done.stdout + done.stderr
    sm.commit("pv falsify after the change")
    code, out = gate(capsys)
    assert code == 0, out
    code, out = gate(capsys, "--strict")
    assert code == 0, out


def test_the_ci_recipe_without_the_live_target(sm, capsys, tmp_path) -> None:
    """docs/falsify.md's second recipe: rerun at algorithm level into a scratch folder, then gate."""
    before = sm.contract.read_text()
    done = sm.pv("falsify", "--all", "--no-update", "--evidence", str(tmp_path / "scratch"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sm.contract.read_text() == before and sm.git("status", "--porcelain") == ""
    sm.ops.write_text(BROKEN_OPS)
    done = sm.pv("falsify", "--all", "--no-update", "--evidence", str(tmp_path / "scratch"))
    assert done.returncode == 1 and sm.contract.read_text() == before


# --------------------------------------------------------------------------- 1. a typo drops a requirement


def test_a_misspelt_requirement_is_refused(sm, capsys) -> None:
    sm.edit("    live_requirements: {device: cuda}", "    live_requirement: {device: cuda}")
    done = sm.falsify()
    assert done.returncode == 2 and "PV033" in done.stderr and "live_requirement" in done.stderr, done.stderr
    assert sm.statuses()["FALSIFY-SM-001"] == "PARTIAL_ALGORITHM_LEVEL"
    sm.commit("typo")
    code, out = gate(capsys)
    [line] = lines_of(out, "invalid")
    assert code == 1 and line.startswith("invalid: softmax-v1: contracts/softmax-v1.yaml:")
    assert "PV033" in line and "'live_requirements'" in line and "the gate judges only valid contracts" in line


def test_a_misspelt_falsification_tests_is_refused(sm, capsys) -> None:
    sm.edit("falsification_tests:", "falsification_test:")
    sm.commit("typo")
    code, out = gate(capsys)
    assert code == 1 and any("PV033" in ln for ln in lines_of(out, "invalid")), out


# --------------------------------------------------------------------------- 2. a claim weakened with its promotion


def _weaken_device(sm: SoftmaxProject) -> None:
    sm.edit("    live_requirements: {device: cuda}", "    live_requirements: {device: cpu}")
    sm.commit("the CPU is enough")
    done = sm.falsify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert sm.statuses()["FALSIFY-SM-001"] == "FUNCTIONAL"
    sm.commit("pv falsify")


def test_a_weakened_requirement_fails_until_acknowledged(sm, capsys) -> None:
    sm.git("checkout", "-q", "-b", "weaker")
    _weaken_device(sm)
    for args in ((), ("--strict",)):
        code, out = gate(capsys, *args)
        [line] = lines_of(out, "weakened")
        assert code == 1 and line.startswith("weakened: softmax-v1/FALSIFY-SM-001: live_requirements.device "
                                             "loosened: cuda -> cpu; ")
        assert "pv acknowledge --contract softmax-v1 --by WHO --reason WHY" in line
    done = sm.pv("acknowledge", "--contract", "softmax-v1", "--by", "Ada <ada@x>", "--reason", "no GPU kernel any more")
    assert done.returncode == 0, done.stderr
    assert "FALSIFY-SM-001: live_requirements.device loosened: cuda -> cpu" in done.stdout
    assert "claim_changes:" in sm.contract.read_text()
    assert run(["validate", "--strict", "contracts/"]) == 0, capsys.readouterr().out
    sm.commit("acknowledge the weaker claim")
    code, out = gate(capsys)
    assert code == 0, out
    assert "note: softmax-v1: weaker claim acknowledged by Ada <ada@x> (no GPU kernel any more)" in out
    # The acknowledgement covers that claim only: a further weakening needs another.
    sm.edit("    rule: shift invariance\n", "    rule: shift invariance, roughly\n")
    sm.commit("reword")
    code, out = gate(capsys)
    assert code == 1 and "weakened: softmax-v1/FALSIFY-SM-002: rule replaced" in out
    assert "acknowledge another version of the claim" in out
    # Acknowledging twice is refused; nothing weaker is refused.
    sm.pv("acknowledge", "--contract", "softmax-v1", "--by", "Ada", "--reason", "wording")
    done = sm.pv("acknowledge", "--contract", "softmax-v1", "--by", "Ada", "--reason", "again")
    assert done.returncode == 2 and "already acknowledged by Ada" in done.stderr


def test_a_hand_written_acknowledgement_must_be_whole(sm, capsys) -> None:
    sm.edit("    live_requirements: {device: cuda}", "    live_requirements: {device: cpu}")
    sm.contract.write_text(sm.contract.read_text() + "claim_changes:\n  - reason: trust me\n    claim: abc\n")
    code, out = gate(capsys)
    invalid = lines_of(out, "invalid")
    assert code == 1 and any("claim_changes[0]: missing required key 'by'" in ln for ln in invalid), out
    assert any("claim_changes[0].claim" in ln for ln in invalid) and lines_of(out, "weakened")


def test_acknowledge_refuses_a_claim_that_is_not_weaker(sm) -> None:
    sm.edit("    live_requirements: {dtype: float64}", "    live_requirements: {dtype: float64, device: cpu}")
    done = sm.pv("acknowledge", "--contract", "softmax-v1", "--by", "Ada", "--reason", "tighter")
    assert done.returncode == 2 and "nothing to acknowledge: the claim of softmax-v1 is not weaker" in done.stderr
    done = sm.pv("acknowledge", "--contract", "softmax-v1", "--by", " ", "--reason", "x")
    assert done.returncode == 2 and "--by and --reason" in done.stderr


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("    tolerance: 1.0e-12", "    tolerance: 1.0e-6",
     "weakened: softmax-v1: proof obligation PO-SM-001: tolerance widened: 1e-12 -> 1e-06"),
    ("    prediction: softmax(x + c) equals softmax(x)\n", "    prediction: softmax(x + c) is close to softmax(x)\n",
     "weakened: softmax-v1/FALSIFY-SM-002: prediction replaced"),
    ("    test: falsifiers/test_softmax_v1.py::test_matches_reference\n",
     "    test: falsifiers/test_softmax_v1.py::test_shift_invariant\n",
     "weakened: softmax-v1/FALSIFY-SM-003: test falsifiers/test_softmax_v1.py::test_matches_reference no longer named"),
    ("      file_paths: [mylib/ops.py]\n      invariants_enforced", "      file_paths: []\n      invariants_enforced",
     "weakened: softmax-v1/FALSIFY-SM-001: algorithm_evidence.file_paths no longer covers mylib/ops.py"),
])
def test_each_kind_of_weakening_is_named(sm, capsys, old, new, expected) -> None:
    sm.edit(old, new)
    code, out = gate(capsys)  # on main with a dirty tree: compared with HEAD
    assert code == 1 and any(ln.startswith(expected) for ln in out.splitlines()), out


def test_a_removed_falsifier_is_a_weaker_claim(sm, capsys) -> None:
    text = sm.contract.read_text()
    sm.contract.write_text(text[:text.index("  - id: FALSIFY-SM-003")])
    code, out = gate(capsys)
    [line] = lines_of(out, "falsifier-removed")
    assert code == 1 and line.startswith("falsifier-removed: softmax-v1/FALSIFY-SM-003: was FUNCTIONAL, now gone; ")
    assert "pv acknowledge" in line


def test_a_snapshot_baseline_carries_the_claim(sm, capsys, tmp_path_factory) -> None:
    snap = tmp_path_factory.mktemp("snap") / "status.json"
    assert run(["status", "--format", "json"]) == 0
    snap.write_text(capsys.readouterr().out)
    sm.edit("    live_requirements: {device: cuda}", "    live_requirements: {device: [cpu, cuda]}")
    code, out = gate(capsys, "--baseline", str(snap))
    assert code == 1 and "live_requirements.device loosened: cuda -> [cpu, cuda]" in out


# --------------------------------------------------------------------------- 3. failures erased on a branch


def test_failures_erased_on_a_branch(sm, capsys) -> None:
    sm.git("checkout", "-q", "-b", "fix")
    sm.ops.write_text(BROKEN_OPS)
    sm.commit("a bug")
    done = sm.falsify()
    assert done.returncode == 1 and sm.statuses()["FALSIFY-SM-002"] == "FUNCTIONAL"
    assert sm.statuses()["FALSIFY-SM-001"] == "FALSIFIED"
    sm.commit("pv falsify: refuted")
    failing = sorted(p for p in sm.evidence.rglob("*.json") if '"outcome": "failed"' in p.read_text())
    assert failing
    sm.ops.write_text(OPS)
    for p in failing:
        p.unlink()
    from pv.falsify.rewrite import rewrite_statuses

    rewrite_statuses(sm.contract, {"FALSIFY-SM-001": "PARTIAL_ALGORITHM_LEVEL", "FALSIFY-SM-003": "FUNCTIONAL"})
    sm.commit("restore the code, tidy the evidence")
    code, out = gate(capsys)  # against the branch's base on main
    evidence = lines_of(out, "evidence")
    assert code == 1 and len(evidence) == len(failing), out
    assert all("committed in" in ln and "(pv falsify: refuted), was removed since" in ln for ln in evidence)
    assert "evidence is append-only on a branch too (git checkout" in evidence[0]


# --------------------------------------------------------------------------- 4. stale evidence


def test_stale_evidence_fails_the_default_gate(sm, capsys) -> None:
    sm.ops.write_text(OPS + "\n# tuned\n")
    sm.commit("tune the kernel, no rerun")
    code, out = gate(capsys)
    unsupported = lines_of(out, "unsupported")
    assert code == 1 and {ln.split(":")[1].strip() for ln in unsupported} == {
        "softmax-v1/FALSIFY-SM-002", "softmax-v1/FALSIFY-SM-003"}, out
    assert all("FUNCTIONAL but its live evidence" in ln and "mylib/ops.py changed since it ran" in ln
               for ln in unsupported)
    # pv falsify, committed: fresh evidence, the gate passes.
    assert sm.falsify().returncode == 0
    sm.commit("rerun")
    code, out = gate(capsys)
    assert code == 0, out


def test_the_weaker_stale_policy_is_chosen_and_shown(sm, capsys) -> None:
    (sm.root / "pyproject.toml").write_text('[tool.pv]\nstale-evidence = "warn"\n')
    code = run(["gate"])
    err = capsys.readouterr().err
    assert code == 2 and "set stale-evidence-by and stale-evidence-reason" in err
    (sm.root / "pyproject.toml").write_text('[tool.pv]\nstale-evidnce = "warn"\n')
    assert run(["gate"]) == 2
    assert "unknown key 'stale-evidnce'; did you mean 'stale-evidence'?" in capsys.readouterr().err
    (sm.root / "pyproject.toml").write_text(
        '[tool.pv]\nstale-evidence = "warn"\nstale-evidence-by = "Ada"\nstale-evidence-reason = "GPU weekly"\n')
    sm.ops.write_text(OPS + "\n# tuned\n")
    sm.commit("tune, no rerun")
    code, out = gate(capsys)
    assert code == 0 and "note: stale evidence policy warn (pyproject.toml: chosen by Ada: GPU weekly)" in out
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "stale (not counted as FUNCTIONAL): mylib/ops.py changed since" in out
    assert "FUNCTIONAL or better, supported and fresh: 0%" in out


# --------------------------------------------------------------------------- 5. an orphan marker


def test_an_orphan_marker_fails_the_gate(sm, capsys) -> None:
    sm.tests.write_text(sm.tests.read_text() + '\n\n@pytest.mark.falsifies("FALSIFY-SM-009")\n'
                        'def test_orphan(falsifier_record):\n    pass\n')
    code, out = gate(capsys)
    [line] = lines_of(out, "binding")
    assert code == 1 and line.startswith("binding: FALSIFY-SM-009: falsifiers/test_softmax_v1.py::test_orphan "
                                         "is marked for FALSIFY-SM-009, which no contract defines")
    assert "(did you mean FALSIFY-SM-00" in line


# --------------------------------------------------------------------------- 6. requirements no run can measure


def test_an_unmeasurable_requirement_is_refused(sm, capsys) -> None:
    sm.edit("    live_requirements: {dtype: float64}", "    live_requirements: {dtype: float64, backend: numpy}")
    assert run(["validate", "--strict", "contracts/"]) == 1
    assert "PV034" in capsys.readouterr().out
    done = sm.falsify()
    assert done.returncode == 2 and "PV034" in done.stderr
    code, out = gate(capsys)
    assert code == 1 and any("PV034" in ln and "backend" in ln for ln in lines_of(out, "invalid")), out


def test_a_list_of_values_means_any_of_them(sm, capsys) -> None:
    sm.edit("    live_requirements: {dtype: float64}", "    live_requirements: {dtype: [float32, float64]}")
    assert run(["validate", "--strict", "contracts/"]) == 0, capsys.readouterr().out


# --------------------------------------------------------------------------- messages


def test_a_falsified_status_is_never_called_raised_or_stale(sm, capsys) -> None:
    sm.git("checkout", "-q", "-b", "bug")
    sm.ops.write_text(BROKEN_OPS)
    sm.commit("a bug")
    assert sm.falsify().returncode == 1
    sm.commit("refuted")
    sm.ops.write_text(BROKEN_OPS + "\n# still broken\n")
    sm.commit("touch the code")
    code, out = gate(capsys, "--strict")
    assert code == 1
    assert "FALSIFIED raised" not in out and not [ln for ln in lines_of(out, "stale") if "FALSIFIED" in ln]
    assert lines_of(out, "regressed"), out


def test_a_stale_claim_and_file_read_as_one_phrase(sm, capsys) -> None:
    sm.ops.write_text(OPS + "\n# tuned\n")
    sm.edit("    if_fails: the max subtraction is wrong", "    if_fails: the max subtraction is off")
    code, out = gate(capsys, "--strict")
    assert code == 1
    assert "mylib/ops.py and the falsifier's claim in the contract changed since it ran" in out, out
