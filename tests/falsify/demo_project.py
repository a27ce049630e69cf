"""A throw-away git project (contracts + falsifiers) whose tests do what a behaviour file says (not a test module)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

CONTRACT = """\
# A demo contract: comments and layout must survive status rewrites.
metadata:
  version: 1.0.0   # semver
  description: demo contract for pv falsify
falsification_tests:
  - id: FALSIFY-DEMO-001
    rule: one
    prediction: it holds
    test: falsifiers/test_demo.py::test_one
    if_fails: it does not
    status: PROPOSED   # untouched comment
  - id: FALSIFY-DEMO-002
    rule: two
    prediction: it holds live
    test:
      - falsifiers/test_demo.py::test_two_algorithm
      - falsifiers/test_demo.py::test_two_live
    if_fails: it does not
    live_requirements:
      device: cpu
      dtype: float64
    algorithm_evidence:
      file_paths:
        - src/algo.py
  - id: FALSIFY-DEMO-003
    rule: three
    prediction: it holds with a model
    test: falsifiers/test_demo.py::test_three
    if_fails: it does not
    status: 'PROPOSED'
"""

TESTS = '''\
import json
from pathlib import Path

import numpy as np
import pytest

from pv.falsify.plugin import fixture_absent

BEHAVIOUR = json.loads((Path(__file__).parent / "behaviour.json").read_text())


def act(name, record):
    # The live requirement of FALSIFY-DEMO-002 is float64 on the CPU: what a float64
    # array measures. A plain pass hands over float32 (algorithm level).
    what = BEHAVIOUR.get(name, "pass")
    record.fact("device", "cuda:0")  # declared: never meets a requirement
    record.metric("score", 0.5)
    if what == "pass-live":
        record.observe(np.zeros(3, dtype=np.float64))
    else:
        record.observe(np.zeros(3, dtype=np.float32))
    if what == "fail":
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
    """The project is a git repository: records back promotions only when covered files are committed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.contract = root / "contracts" / "demo-v1.yaml"
        self.tests = root / "falsifiers" / "test_demo.py"
        self.evidence = root / "evidence"

    def behave(self, **behaviour: str) -> None:
        (self.root / "falsifiers" / "behaviour.json").write_text(json.dumps(behaviour))

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(self.root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                              check=True, capture_output=True, text=True)
        return done.stdout.strip()

    def commit(self, message: str = "change") -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")

    def add_test(self, source: str, name: str = "test_extra.py") -> None:
        (self.root / "falsifiers" / name).write_text(textwrap.dedent(source))

    def records(self, fid: str | None = None) -> list[Path]:
        pattern = f"demo-v1/{fid}/*.json" if fid else "demo-v1/*/*.json"
        return sorted(self.evidence.glob(pattern))

    def args(self, *extra: str) -> list[str]:
        return ["falsify", "--contract", "demo-v1", "--contracts", str(self.root / "contracts"),
                "--falsifiers", str(self.root / "falsifiers"), "--evidence", str(self.evidence), *extra]


def make_demo(tmp_path: Path) -> DemoProject:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "falsifiers").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "algo.py").write_text("def algo():\n    return 1\n")
    (tmp_path / "contracts" / "demo-v1.yaml").write_text(CONTRACT)
    (tmp_path / "falsifiers" / "test_demo.py").write_text(TESTS)
    (tmp_path / ".gitignore").write_text("falsifiers/behaviour.json\n__pycache__/\n.lock\n")
    project = DemoProject(tmp_path)
    project.behave()
    project.git("init", "-q", "-b", "main")
    project.commit("demo project")
    return project
