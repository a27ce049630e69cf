"""Evidence drift: cited files must exist and cited functions must be defined in them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from pv.contract.evidence import is_defined
from pv.contract.validate import validate_files

SOURCE = textwrap.dedent("""\
    # parse_in_comment is only mentioned here
    def parse_stages(spec):
        text = "helper_in_string"
        return spec

    class Dims:
        def size(self, name):
            def inner():
                pass
            return 1

    async def fetch():
        pass
    """)


def _repo(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    src = tmp_path / "src" / "pv"
    src.mkdir(parents=True)
    (src / "stages.py").write_text(SOURCE, encoding="utf-8")
    (src / "kernel.rs").write_text("pub fn fused_rmsnorm(x: &[f32]) {}\n", encoding="utf-8")
    (src / "broken.py").write_text("def ok(:\n    pass  # not python\ndef broken_fn\n", encoding="utf-8")
    return tmp_path


def test_python_names_come_from_ast(tmp_path):
    path = _repo(tmp_path) / "src" / "pv" / "stages.py"
    for name in ("parse_stages", "parse_stages()", "Dims", "Dims.size", "Dims.size.inner", "fetch",
                 "pv.stages.parse_stages", "stages.Dims.size", "src.pv.stages.fetch"):
        assert is_defined(name, path), name
    for name in ("parse_in_comment", "helper_in_string", "size", "Other.parse_stages",
                 "other.parse_stages", "missing", ""):
        assert not is_defined(name, path), name


def test_other_languages_match_whole_words(tmp_path):
    repo = _repo(tmp_path)
    rs = repo / "src" / "pv" / "kernel.rs"
    assert is_defined("fused_rmsnorm", rs) and is_defined("kernel::fused_rmsnorm", rs)
    assert not is_defined("rmsnorm", rs)
    broken = repo / "src" / "pv" / "broken.py"  # unparsable Python falls back to words
    assert is_defined("broken_fn", broken) and not is_defined("nothing", broken)


def _contract(folder: Path, evidence: object) -> Path:
    data = {
        "metadata": {"version": "1", "description": "d"},
        "falsification_tests": [{"id": "F-1", "rule": "r", "prediction": "p", "test": "t",
                                 "if_fails": "f", "algorithm_evidence": evidence}],
    }
    path = folder / "contracts" / "c-v1.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _rules(path: Path, **kwargs: object) -> list[tuple[str, tuple[object, ...], str]]:
    report = validate_files([path], **kwargs)  # type: ignore[arg-type]
    return [(f.rule, f.path, f.message) for f in report.findings]


BASE = ("falsification_tests", 0, "algorithm_evidence")


def test_cited_evidence_that_exists_passes(tmp_path):
    repo = _repo(tmp_path)
    path = _contract(repo, {"file_paths": ["src/pv/stages.py", "src/pv/kernel.rs"],
                            "function_names": ["parse_stages", "Dims.size", "fused_rmsnorm"]})
    assert _rules(path) == []


def test_missing_file_is_reported(tmp_path):
    repo = _repo(tmp_path)
    path = _contract(repo, {"file_paths": ["src/pv/stages.py", "src/pv/gone.py", "/etc/passwd",
                                           "../outside.py", "src/pv"],
                            "function_names": ["parse_stages"]})
    found = _rules(path)
    assert [(r, p) for r, p, _ in found] == [("PV022", BASE + ("file_paths", i)) for i in (1, 2, 3, 4)]
    assert "does not exist" in found[0][2] and "relative to the repository root" in found[1][2]
    assert "relative to the repository root" in found[2][2] and "not a regular file" in found[3][2]


def test_undefined_function_is_reported(tmp_path):
    repo = _repo(tmp_path)
    path = _contract(repo, {"file_paths": ["src/pv/stages.py"],
                            "function_names": ["parse_stages", "parse_in_comment"]})
    assert _rules(path) == [("PV023", BASE + ("function_names", 1),
                             "function 'parse_in_comment' is not defined in src/pv/stages.py")]


def test_evidence_check_is_off_outside_a_checkout_unless_forced(tmp_path, monkeypatch):
    path = _contract(tmp_path, {"file_paths": ["src/nowhere.py"], "function_names": ["f"]})
    assert _rules(path) == []  # no .git above: auto mode skips
    monkeypatch.chdir(tmp_path)
    assert [r for r, _, _ in _rules(path, check_evidence=True)] == ["PV022"]


def test_evidence_check_can_be_turned_off_inside_a_checkout(tmp_path):
    repo = _repo(tmp_path)
    path = _contract(repo, {"file_paths": ["src/nowhere.py"]})
    assert [r for r, _, _ in _rules(path)] == ["PV022"]
    assert _rules(path, check_evidence=False) == []


def test_list_form_evidence_is_not_checked(tmp_path):
    repo = _repo(tmp_path)
    assert _rules(_contract(repo, ["free text note", "src/nowhere.py"])) == []
