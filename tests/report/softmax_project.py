"""A small repository adopting pv, as a new user sets one up: a numpy softmax, one contract with
three falsifiers, its statuses from ``pv falsify`` (not a test module).

``FALSIFY-SM-001`` needs ``device: cuda``, so a CPU run leaves it at PARTIAL_ALGORITHM_LEVEL;
``FALSIFY-SM-002`` has no live requirements (FUNCTIONAL on any pass); ``FALSIFY-SM-003`` needs
float64, which its test measures (FUNCTIONAL). ``mylib/ops.py`` is the covered code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

OPS = '''\
import numpy as np


def softmax(x):
    z = np.asarray(x, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
'''

BROKEN_OPS = OPS.replace("return e / e.sum(axis=-1, keepdims=True)", "return e / (e.sum(axis=-1, keepdims=True) + 1)")

CONTRACT = """\
metadata:
  id: softmax-v1
  version: "1.0.0"
  description: softmax over the last axis
proof_obligations:
  - id: PO-SM-001
    type: conservation
    property: every row sums to one
    tolerance: 1.0e-12
falsification_tests:
  - id: FALSIFY-SM-001
    rule: rows sum to one on the target
    prediction: each row of softmax(x) sums to one within 1e-12
    test: falsifiers/test_softmax_v1.py::test_rows_sum_to_one
    if_fails: the normaliser is wrong
    live_requirements: {device: cuda}
    algorithm_evidence:
      file_paths: [mylib/ops.py]
      invariants_enforced: [PO-SM-001]
  - id: FALSIFY-SM-002
    rule: shift invariance
    prediction: softmax(x + c) equals softmax(x)
    test: falsifiers/test_softmax_v1.py::test_shift_invariant
    if_fails: the max subtraction is wrong
    algorithm_evidence:
      file_paths: [mylib/ops.py]
  - id: FALSIFY-SM-003
    rule: matches a float64 reference
    prediction: softmax(x) equals exp(x) / sum(exp(x)) in float64
    test: falsifiers/test_softmax_v1.py::test_matches_reference
    if_fails: the kernel is not the softmax
    live_requirements: {dtype: float64}
    algorithm_evidence:
      file_paths: [mylib/ops.py]
"""

TESTS = '''\
import numpy as np
import pytest

from mylib.ops import softmax

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])


@pytest.mark.falsifies("FALSIFY-SM-001")
def test_rows_sum_to_one(falsifier_record):
    p = softmax(X)
    falsifier_record.observe(p)
    assert np.allclose(p.sum(axis=-1), 1.0, atol=1e-12)


@pytest.mark.falsifies("FALSIFY-SM-002")
def test_shift_invariant(falsifier_record):
    falsifier_record.observe(X)
    assert np.allclose(softmax(X + 100.0), softmax(X))


@pytest.mark.falsifies("FALSIFY-SM-003")
def test_matches_reference(falsifier_record):
    p = softmax(X)
    falsifier_record.observe(p)
    ref = np.exp(X) / np.exp(X).sum(axis=-1, keepdims=True)
    assert np.allclose(p, ref, rtol=1e-12, atol=0)
'''


class SoftmaxProject:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.contract = root / "contracts" / "softmax-v1.yaml"
        self.ops = root / "mylib" / "ops.py"
        self.tests = root / "falsifiers" / "test_softmax_v1.py"
        self.evidence = root / "evidence"

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(self.root), "-c", "user.email=u@x", "-c", "user.name=u", *args],
                              check=True, capture_output=True, text=True)
        return done.stdout.strip()

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")

    def pv(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pv`` in a subprocess in the repository, as a user runs it."""
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        env.pop("PV_EVIDENCE_KEY", None)
        return subprocess.run([sys.executable, "-m", "pv.cli", *args], cwd=self.root, capture_output=True,
                              text=True, check=False, env=env)

    def falsify(self) -> subprocess.CompletedProcess[str]:
        return self.pv("falsify", "--contract", "softmax-v1")

    def statuses(self) -> dict[str, str | None]:
        data = yaml.safe_load(self.contract.read_text())
        return {f["id"]: f.get("status") for f in data["falsification_tests"]}

    def edit(self, old: str, new: str) -> None:
        text = self.contract.read_text()
        assert old in text, old
        self.contract.write_text(text.replace(old, new, 1))


def make_project(root: Path) -> SoftmaxProject:
    for folder in ("contracts", "falsifiers", "mylib"):
        (root / folder).mkdir(parents=True)
    (root / "mylib" / "__init__.py").write_text("")
    (root / "mylib" / "ops.py").write_text(OPS)
    (root / "contracts" / "softmax-v1.yaml").write_text(CONTRACT)
    (root / "falsifiers" / "test_softmax_v1.py").write_text(TESTS)
    (root / ".gitignore").write_text("__pycache__/\n")
    project = SoftmaxProject(root)
    project.git("init", "-q", "-b", "main")
    project.commit("softmax and its contract")
    done = project.falsify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert project.statuses() == {"FALSIFY-SM-001": "PARTIAL_ALGORITHM_LEVEL", "FALSIFY-SM-002": "FUNCTIONAL",
                                  "FALSIFY-SM-003": "FUNCTIONAL"}, done.stdout
    project.commit("pv falsify: first evidence")
    return project
