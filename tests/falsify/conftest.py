"""A throw-away project (contracts + falsifiers) whose tests do what a behaviour file says."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

CONTRACT = """\
# A demo contract: comments and layout must survive status rewrites.
metadata:
  version: 1.0.0   # semver
  description: demo contract for pv falsify
falsification_tests:
  - id: FALSIFY-DEMO-001
    rule: one
    prediction: it holds
    test: falsifiers/test_demo.py
    if_fails: it does not
    status: PROPOSED   # untouched comment
  - id: FALSIFY-DEMO-002
    rule: two
    prediction: it holds live
    test: falsifiers/test_demo.py
    if_fails: it does not
    live_requirements:
      device: cuda
      weights: real
    algorithm_evidence:
      file_paths:
        - src/algo.py
  - id: FALSIFY-DEMO-003
    rule: three
    prediction: it holds with a model
    test: falsifiers/test_demo.py
    if_fails: it does not
    status: 'PROPOSED'
"""

TESTS = '''\
import json
from pathlib import Path

import pytest

from pv.falsify.plugin import fixture_absent

BEHAVIOUR = json.loads((Path(__file__).parent / "behaviour.json").read_text())


def act(name, record):
    what = BEHAVIOUR.get(name, "pass")
    record.fact("device", "cpu")
    record.weights("synthetic")
    record.metric("score", 0.5)
    if what == "pass-live":
        record.device("cuda:0")
        record.weights("real")
    elif what == "fail":
        assert False, f"{name} refuted"
    elif what == "skip-absent":
        fixture_absent("no GPU here")
    elif what == "skip":
        pytest.skip("not today")


@pytest.mark.falsifies("FALSIFY-DEMO-001")
def test_one(falsifier_record):
    act("one", falsifier_record)


@pytest.mark.falsifies("FALSIFY-DEMO-002")
def test_two_algorithm(falsifier_record):
    act("two_algorithm", falsifier_record)


@pytest.mark.falsifies("FALSIFY-DEMO-002")
def test_two_live(falsifier_record):
    act("two_live", falsifier_record)


@pytest.mark.falsifies("FALSIFY-DEMO-003")
def test_three(falsifier_record):
    act("three", falsifier_record)
'''


class DemoProject:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.contract = root / "contracts" / "demo-v1.yaml"
        self.tests = root / "falsifiers" / "test_demo.py"
        self.evidence = root / "evidence"

    def behave(self, **behaviour: str) -> None:
        (self.root / "falsifiers" / "behaviour.json").write_text(json.dumps(behaviour))

    def add_test(self, source: str, name: str = "test_extra.py") -> None:
        (self.root / "falsifiers" / name).write_text(textwrap.dedent(source))

    def records(self, fid: str | None = None) -> list[Path]:
        pattern = f"demo-v1/{fid}/*.json" if fid else "demo-v1/*/*.json"
        return sorted(self.evidence.glob(pattern))

    def args(self, *extra: str) -> list[str]:
        return ["falsify", "--contract", "demo-v1", "--contracts", str(self.root / "contracts"),
                "--falsifiers", str(self.root / "falsifiers"), "--evidence", str(self.evidence), *extra]


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DemoProject:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "falsifiers").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "algo.py").write_text("def algo():\n    return 1\n")
    (tmp_path / "contracts" / "demo-v1.yaml").write_text(CONTRACT)
    (tmp_path / "falsifiers" / "test_demo.py").write_text(TESTS)
    project = DemoProject(tmp_path)
    project.behave()
    monkeypatch.chdir(tmp_path)
    return project
