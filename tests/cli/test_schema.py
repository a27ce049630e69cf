"""``pv schema``: the packaged contract schema on stdout, or written where a modeline can name it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pv.cli import COMMANDS, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # the default folder is at the repository root
    return tmp_path


def test_prints_the_packaged_contract_schema(repo: Path, capsys) -> None:
    assert run(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == (REPO / "schemas" / "contract.schema.json").read_text(encoding="utf-8")
    assert json.loads(out)["$schema"].startswith("https://json-schema.org/")
    assert "schema" in COMMANDS and COMMANDS["schema"][0] == "pv.cli.schema"


def test_write_defaults_to_schemas_at_the_root_and_names_the_modeline(repo: Path, capsys) -> None:
    assert run(["schema", "--write"]) == 0
    out = capsys.readouterr().out
    for name in ("contract.schema.json", "evidence.schema.json"):
        assert (repo / "schemas" / name).read_bytes() == (REPO / "schemas" / name).read_bytes()
        assert f"wrote schemas/{name}" in out
    assert "# yaml-language-server: $schema=../schemas/contract.schema.json" in out
    assert not (repo / "sub" / "schemas").exists()
    # Again: the same bytes are left alone, not an error.
    assert run(["schema", "--write"]) == 0
    assert "unchanged schemas/contract.schema.json" in capsys.readouterr().out


def test_a_different_file_is_kept_without_force(repo: Path, capsys) -> None:
    folder = repo / "out"
    folder.mkdir()
    (folder / "evidence.schema.json").write_text("{\"mine\": true}\n")
    assert run(["schema", "--write", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evidence.schema.json exists and differs" in err and "--force" in err
    # Nothing written at all: the check comes before any write.
    assert (folder / "evidence.schema.json").read_text() == "{\"mine\": true}\n"
    assert not (folder / "contract.schema.json").exists()
    assert run(["schema", "--write", str(folder), "--force"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert (folder / "evidence.schema.json").read_bytes() == (REPO / "schemas" / "evidence.schema.json").read_bytes()


def test_a_folder_in_the_way_and_force_alone_are_one_line_errors(repo: Path, capsys) -> None:
    (repo / "out" / "contract.schema.json").mkdir(parents=True)
    assert run(["schema", "--write", str(repo / "out"), "--force"]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert run(["schema", "--force"]) == 2
    assert "--force only goes with --write" in capsys.readouterr().err
