"""``pv discharge``: DISCHARGED only on live evidence for every matrix target, committed artifacts,
and a record naming who and why; the gate re-checks all of it."""

from __future__ import annotations

from pv.cli import run

MATRIX = """    live_requirements:
      device: cpu
      dtype: float64
    discharge:
      matrix:
        - dtype: float64
      artifacts:
        - proofs/two.md
"""


def _with_matrix(repo) -> None:
    text = repo.contract.read_text()
    text = text.replace("    live_requirements:\n      device: cpu\n      dtype: float64\n", MATRIX)
    repo.contract.write_text(text)
    (repo.root / "proofs").mkdir()
    (repo.root / "proofs" / "two.md").write_text("a proof of FALSIFY-DEMO-002\n")
    repo.commit("discharge matrix and proof")


def discharge(capsys, *extra: str) -> tuple[int, str, str]:
    code = run(["discharge", "FALSIFY-DEMO-002", "--contract", "demo-v1", "--by", "alice",
                "--reason", "proved in proofs/two.md", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_refused_without_live_evidence(repo, capsys) -> None:
    _with_matrix(repo)
    code, _, err = discharge(capsys)
    assert code == 2 and "no live pass after the latest failure backs a discharge" in err
    assert repo.contract.read_text().count("DISCHARGED") == 0


def test_the_honest_discharge_passes_the_gate_and_an_edit_to_its_artifact_fails_it(repo, capsys) -> None:
    _with_matrix(repo)
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("live evidence")
    code, out, err = discharge(capsys)
    assert code == 0, err
    assert "FALSIFY-DEMO-002: DISCHARGED by alice, resting on 1 live record(s) and 1 artifact(s)" in out
    assert "status: DISCHARGED" in repo.contract.read_text()
    repo.commit("discharge")
    assert run(["gate"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    # The proof changes after the discharge: the discharge no longer stands.
    (repo.root / "proofs" / "two.md").write_text("a different proof\n")
    repo.commit("edit the proof")
    assert run(["gate"]) == 1
    out = capsys.readouterr().out
    assert "unsupported: demo-v1/FALSIFY-DEMO-002: DISCHARGED but the discharge record" in out
    assert "no longer stands: proofs/two.md changed since it was written; pv discharge again" in out


def test_refused_with_uncommitted_artifacts_or_missing_ones(repo, capsys) -> None:
    _with_matrix(repo)
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("live evidence")
    (repo.root / "proofs" / "two.md").write_text("edited, not committed\n")
    code, _, err = discharge(capsys)
    assert code == 2 and "commit first" in err and "proofs/two.md" in err
    repo.git("checkout", "--", "proofs/two.md")
    code, _, err = discharge(capsys, "--artifact", "proofs/missing.md")
    assert code == 2 and "proofs/missing.md" in err


def test_refused_when_a_matrix_target_has_no_live_pass(repo, capsys) -> None:
    _with_matrix(repo)
    repo.contract.write_text(repo.contract.read_text().replace(
        "      matrix:\n        - dtype: float64\n",
        "      matrix:\n        - dtype: float64\n        - dtype: float16\n"))
    repo.commit("two targets")
    repo.behave(two_live="pass-live", three="skip-absent")
    assert repo.falsify().returncode == 0
    repo.commit("live evidence for float64 only")
    code, _, err = discharge(capsys)
    assert code == 2 and "no live pass meets these discharge targets: device=cpu, dtype=float16" in err


def test_who_and_why_are_required(repo, capsys) -> None:
    code = run(["discharge", "FALSIFY-DEMO-002", "--contract", "demo-v1", "--by", " ", "--reason", "x"])
    assert code == 2 and "--by (who) and --reason (why)" in capsys.readouterr().err
