"""``pv validate``: line format, summary, JSON, exit codes, usage errors, import cost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pv.cli import run

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning) "
                  r"(?P<rule>PV\d{3}): (?P<msg>.+)$")

GOOD = textwrap.dedent("""\
    metadata:
      version: "1.0"
      description: d
    falsification_tests:
      - id: F-1
        rule: r
        prediction: p
        test: t
        if_fails: f
    """)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_repository_contracts_pass_strict(capsys):
    assert run(["validate", "--strict", str(REPO / "contracts")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ok: ") and out[-1].endswith(" checked, 0 errors, 0 warnings (strict)")


def test_findings_lines_and_exit_1(tmp_path, capsys):
    bad = _write(tmp_path, "bad.yaml", GOOD.replace("prediction: p", "prediction: ''")
                 .replace('"1.0"', "1.0"))
    assert run(["validate", "--no-check-evidence", str(bad)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    parsed = [LINE.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    assert [(m["line"], m["col"], m["sev"], m["rule"]) for m in parsed] == [
        ("2", "3", "warning", "PV011"), ("7", "5", "error", "PV013")]
    assert parsed[0]["file"] == str(bad)
    assert lines[-1] == "FAILED: 1 file checked, 1 error, 1 warning"


def test_warnings_alone_exit_0_and_strict_exit_1(tmp_path, capsys):
    path = _write(tmp_path, "w.yaml", GOOD.replace('"1.0"', "1.0"))
    assert run(["validate", str(path)]) == 0
    assert run(["validate", "--strict", str(path)]) == 1
    out = capsys.readouterr().out
    assert "warning PV011" in out and "error PV011" in out


def test_json_format(tmp_path, capsys):
    _write(tmp_path, "a.yaml", GOOD)
    _write(tmp_path, "b.yaml", "- not a mapping\n")
    assert run(["validate", "--format", "json", str(tmp_path)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["files"] == 2 and data["errors"] == 1
    (finding,) = data["findings"]
    assert finding["rule"] == "PV006" and finding["line"] == 1 and finding["severity"] == "error"
    assert set(finding) == {"file", "line", "column", "path", "json_path", "rule", "severity",
                            "message"}
    assert data["contracts"][0]["falsifiers"][0]["id"] == "F-1"


@pytest.mark.parametrize("args, message", [
    (["validate", "/nonexistent/contracts"], "pv: error: /nonexistent/contracts: no such file or directory"),
    (["validate", "--format", "xml", "."], "Invalid value for '--format'"),
])
def test_usage_errors_exit_2_with_one_line(args, message, capsys):
    assert run(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err + captured.out


def test_empty_directory_is_a_usage_error(tmp_path, capsys):
    assert run(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pv: error: {tmp_path}: no contract files (*.yaml, *.yml) in this directory"


def test_no_paths_is_a_usage_error(capsys):
    assert run(["validate"]) == 2
    assert "Missing argument" in capsys.readouterr().err


BAD_INPUTS = {
    "empty.yaml": (b"", "PV006"),
    "list.yaml": (b"- 1\n- 2\n", "PV006"),
    "scalar.yaml": (b"42\n", "PV006"),
    "syntax.yaml": (b"metadata:\n  a: [1, 2\n", "PV004"),
    "multi.yaml": (b"a: 1\n---\nb: 2\n", "PV005"),
    "binary.yaml": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "PV003"),
    "bomb.yaml": (b"".join(
        b"%c: &%c [%s]\n" % (ord(name), ord(name), b",".join([ref] * 10))
        for name, ref in zip("abcdef", [b"x", b"*a", b"*b", b"*c", b"*d", b"*e"])), "PV007"),
    "python.yaml": (b"x: !!python/object/apply:os.system ['echo pwned']\n", "PV008"),
    "deep.yaml": (b"x: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "PV009"),
}


def test_every_bad_input_is_one_finding_never_a_traceback(tmp_path, capsys):
    for name, (content, _) in BAD_INPUTS.items():
        _write(tmp_path, name, content)
    big = tmp_path / "huge.yaml"
    big.write_bytes(b"a: " + b"x" * (2 * 1024 * 1024) + b"\n")
    assert run(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and captured.err == ""
    rules = {Path(m["file"]).name: m["rule"]
             for m in map(LINE.match, captured.out.splitlines()[:-1]) if m}
    expected = {name: rule for name, (_, rule) in BAD_INPUTS.items()} | {"huge.yaml": "PV002"}
    assert rules == expected
    assert "pwned" not in captured.out.replace("os.system", "")


def test_validate_does_not_import_torch_or_transformers():
    code = textwrap.dedent(f"""\
        import sys
        import pv.cli
        rc = pv.cli.run(["validate", "--strict", {str(REPO / "contracts")!r}])
        heavy = sorted(m for m in ("torch", "transformers", "safetensors", "gguf", "matplotlib")
                       if m in sys.modules)
        print(rc, heavy)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr


def test_console_script_entry(tmp_path):
    path = _write(tmp_path, "ok.yaml", GOOD)
    done = subprocess.run([sys.executable, "-m", "pv.cli", "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok: 1 file checked, 0 errors, 0 warnings"


def test_pre_commit_hooks_validate_the_whole_set(tmp_path, monkeypatch, capsys):
    """A commit that changes one contract checks them all: set-wide rules need every file."""
    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert [h["id"] for h in hooks] == ["pv-validate", "pv-validate-strict"]
    folder = tmp_path / "contracts"
    folder.mkdir()
    _write(folder, "a.yaml", GOOD)
    _write(folder, "b.yaml", GOOD)  # the same falsifier id F-1 in another file: PV015
    monkeypatch.chdir(tmp_path)
    for hook in hooks:
        assert hook["pass_filenames"] is False and hook["args"] == ["contracts"]
        files = re.compile(hook["files"])
        assert files.search("contracts/x.yaml") and files.search("sub/contracts/y.yml")
        assert not files.search("evidence/x.yaml")
        argv = hook["entry"].split()[1:] + hook["args"]
        rc = run(argv)
        out = capsys.readouterr().out
        assert "PV015" in out, out
        assert rc == (1 if "--strict" in argv else 0), out
