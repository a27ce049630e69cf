"""``pv scaffold``: where the skeleton goes, what it shows (falsifier_record), and the schema hint."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pv.cli import run
from pv.contract import scaffold as sc

REPO = Path(__file__).resolve().parents[2]

CONTRACT = """\
metadata:
  version: "1"
  description: d
falsification_tests:
  - id: FALSIFY-SM-001
    rule: r
    prediction: rows sum to one
    if_fails: f
    live_requirements: {device: cuda, weights: real}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "softmax-v1.yaml").write_text(CONTRACT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_run(path: Path, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
                          capture_output=True, text=True, cwd=cwd, check=False)
    return done.stdout


def test_the_file_is_the_contract_id_as_a_python_name_as_documented(project: Path, capsys) -> None:
    assert sc.skeleton_file_name("softmax-v1") == "test_softmax_v1.py"
    assert sc.skeleton_file_name("Attn.Sub-V2") == "test_attn_sub_v2.py"
    assert run(["scaffold", "softmax-v1"]) == 0
    out = capsys.readouterr().out
    assert 'FALSIFY-SM-001: test: "falsifiers/test_softmax_v1.py::test_falsify_sm_001"' in out
    assert (project / "falsifiers" / "test_softmax_v1.py").is_file()
    docs = " ".join((REPO / "docs" / "falsify.md").read_text(encoding="utf-8").split())
    assert "`softmax-v1` gets `falsifiers/test_softmax_v1.py`" in docs
    assert "test_<contract id as a Python name>.py" in docs


def test_the_skeleton_takes_falsifier_record_and_still_fails(project: Path, capsys) -> None:
    assert run(["scaffold", "softmax-v1"]) == 0
    target = project / "falsifiers" / "test_softmax_v1.py"
    text = target.read_text(encoding="utf-8")
    fn = ast.parse(text).body[-1]
    assert isinstance(fn, ast.FunctionDef) and [a.arg for a in fn.args.args] == ["falsifier_record"]
    assert "#     falsifier_record.observe(out)" in text
    assert "# live_requirements: device=cuda, weights=real: met only by facts pv measured" in text
    # The fixture resolves (pv's plugin), and the body fails: a scaffold never passes.
    out = pytest_run(target, project)
    assert "1 failed" in out and "Failed: not written yet" in out, out[-800:]


def test_appending_adds_the_import_the_annotation_needs(project: Path, capsys) -> None:
    target = project / "falsifiers" / "test_softmax_v1.py"
    target.parent.mkdir()
    target.write_text("import pytest\n\n\ndef test_mine():\n    assert True\n", encoding="utf-8")
    assert run(["scaffold", "softmax-v1"]) == 0
    text = target.read_text(encoding="utf-8")
    assert text.count("from pv.falsify.plugin import FalsifierRecord") == 1
    out = pytest_run(target, project)
    assert "1 failed, 1 passed" in out, out[-800:]


def test_the_output_names_the_modeline_and_pv_schema(project: Path, capsys) -> None:
    contract = project / "contracts" / "softmax-v1.yaml"
    assert run(["scaffold", "softmax-v1", "-o", "falsifiers/test_a.py"]) == 0
    out = capsys.readouterr().out
    assert ("hint: start contracts/softmax-v1.yaml with `# yaml-language-server: "
            "$schema=../schemas/contract.schema.json`") in out and "pv schema --write" in out
    # A modeline that names a missing file: said so.
    contract.write_text("# yaml-language-server: $schema=../schemas/contract.schema.json\n" + CONTRACT)
    assert run(["scaffold", "softmax-v1", "-o", "falsifiers/test_b.py"]) == 0
    out = capsys.readouterr().out
    assert ("hint: contracts/softmax-v1.yaml's modeline names ../schemas/contract.schema.json, "
            "which does not exist: `pv schema --write`") in out
    # Once the schema is there, no hint.
    assert run(["schema", "--write"]) == 0
    capsys.readouterr()
    assert run(["scaffold", "softmax-v1", "-o", "falsifiers/test_c.py"]) == 0
    assert "hint:" not in capsys.readouterr().out
