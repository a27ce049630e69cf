"""``pv status``: per contract and total, blocked reasons, mismatches, backing, stale and edited evidence."""

from __future__ import annotations

import json
import subprocess
import sys

from pv.cli import run


def test_text_report(repo, capsys) -> None:
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "demo-v1 (v1.0.0) contracts/demo-v1.yaml" in out
    assert "FALSIFY-DEMO-001  FUNCTIONAL" in out and "no live requirements" in out
    assert "FALSIFY-DEMO-002  PARTIAL_ALGORITHM_LEVEL" in out
    assert "(not live: dtype=float64 (measured: float32))" in out
    assert "blocked: fixture absent: no GPU here" in out
    assert "total: 3 falsifiers: 1 FUNCTIONAL, 1 PARTIAL_ALGORITHM_LEVEL, 1 BLOCKER_FIXTURE_ABSENT; " \
           "FUNCTIONAL or better, supported and fresh: 33%" in out
    assert "stale" not in out and "unsupported" not in out


def test_json_report_and_stale_evidence(repo, capsys) -> None:
    (repo.root / "src" / "algo.py").write_text("def algo():\n    return 2\n")
    assert run(["status", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "pv-status" and data["total"]["falsifiers"] == 3
    (c,) = data["contracts"]
    f1, f2, f3 = c["falsifiers"]
    assert f1["status"] == "FUNCTIONAL" and f1["supported"] and not f1["stale"]
    assert f2["supported"] and f2["stale"] and f2["backing"]["stale"] == ["src/algo.py"]
    assert f2["backing"]["path"].startswith("evidence/demo-v1/FALSIFY-DEMO-002/")
    assert f2["backing"]["live"] is False and "dtype=float64 (measured: float32)" in f2["backing"]["why"]
    assert f3["blocked_reason"] == "fixture absent: no GPU here"
    assert all(len(d) == 64 for f in (f1, f2, f3) for d in f["evidence"].values())
    assert c["functional_share"] == round(1 / 3, 4)
    assert run(["status", "--format", "text"]) == 0
    assert "stale: src/algo.py changed since evidence/demo-v1/FALSIFY-DEMO-002/" in capsys.readouterr().out


def test_markdown_report(repo, capsys) -> None:
    repo.set_status("FALSIFY-DEMO-002", "FUNCTIONAL")  # hand-edited: no live record
    assert run(["status", "--format", "markdown", "--contract", "demo-v1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Falsifier status\n")
    assert "| Falsifier | Status | Evidence | Notes |" in out
    assert "| `FALSIFY-DEMO-002` | FUNCTIONAL |" in out
    assert "unsupported: FUNCTIONAL but no passing live record" in out


def test_an_unreadable_record_is_reported_not_fatal(repo, capsys) -> None:
    assert run(["status", "--contract", "nope"]) == 2
    assert capsys.readouterr().err.startswith("pv: error: no contract with id 'nope'")
    bad = repo.evidence / "demo-v1" / "FALSIFY-DEMO-002" / "zz.json"
    bad.write_text("{")
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "unreadable record:" in out and "zz.json:1:2: invalid JSON" in out


def test_status_and_gate_never_import_torch(repo) -> None:
    code = ("import sys; from pv.cli import run; "
            "assert run(['status']) == 0; assert run(['gate']) in (0, 1); "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo.root, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_a_binding_registry_is_not_a_contract(repo, capsys) -> None:
    (repo.root / "contracts" / "binding.yaml").write_text("bindings:\n  - contract: demo-v1\n    equation: e\n")
    assert run(["status"]) == 0
    assert "total: 3 falsifiers" in capsys.readouterr().out
