"""``pv coverage``: a marker naming an id no contract defines is an error, with or without --strict."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pv.cli import run

CONTRACT = textwrap.dedent("""\
    metadata: {id: demo, version: "1", description: d}
    falsification_tests:
      - id: FALSIFY-DEMO-001
        rule: r
        prediction: p
        test: falsifiers/test_demo.py::test_one
        if_fails: f
    """)


def marked_file(marker: str) -> str:
    return textwrap.dedent(f"""\
        import pytest

        @pytest.mark.falsifies("FALSIFY-DEMO-001")
        def test_one(): ...

        @pytest.mark.falsifies("{marker}")
        def test_stray(): ...
        """)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "falsifiers").mkdir()
    (tmp_path / "contracts" / "demo.yaml").write_text(CONTRACT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_orphan_marker_fails_coverage_and_names_the_closest_id(project: Path, capsys) -> None:
    (project / "falsifiers" / "test_demo.py").write_text(marked_file("FALSIFY-DEMO-01"), encoding="utf-8")
    assert run(["coverage"]) == 1
    out = capsys.readouterr().out
    assert ("error: test falsifiers/test_demo.py::test_stray (line 7) is marked for FALSIFY-DEMO-01, which no "
            "contract defines (did you mean FALSIFY-DEMO-001?); pv falsify refuses to run any contract "
            "while it is\n") in out
    assert out.rstrip().endswith("coverage incomplete; 1 orphan marker(s), an error")
    assert run(["coverage", "--strict"]) == 1
    capsys.readouterr()
    assert run(["coverage", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["orphan_markers"] == [{"test": "falsifiers/test_demo.py::test_stray", "line": 7,
                                       "id": "FALSIFY-DEMO-01", "closest": "FALSIFY-DEMO-001"}]


def test_an_orphan_marker_unlike_any_id_has_no_guess(project: Path, capsys) -> None:
    (project / "falsifiers" / "test_demo.py").write_text(marked_file("SOMETHING-ELSE"), encoding="utf-8")
    assert run(["coverage"]) == 1
    out = capsys.readouterr().out
    assert "is marked for SOMETHING-ELSE, which no contract defines; pv falsify refuses" in out
    assert "did you mean" not in out


def test_an_unnamed_test_is_a_gap_not_an_error(project: Path, capsys) -> None:
    (project / "falsifiers" / "test_demo.py").write_text(marked_file("FALSIFY-DEMO-001"), encoding="utf-8")
    assert run(["coverage"]) == 0  # test_stray is marked for a known id that test: does not name
    out = capsys.readouterr().out
    assert "test falsifiers/test_demo.py::test_stray (line 7): no falsifier (marked for FALSIFY-DEMO-001" in out
    assert "error:" not in out
    assert run(["coverage", "--strict"]) == 1
