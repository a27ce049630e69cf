"""A git repository holding contracts and evidence, for status and gate tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "falsify"))

from tests_falsify_records import make_record

CONTRACT = """\
metadata:
  version: 1.0.0
  description: gate demo
  status: FUNCTIONAL
falsification_tests:
  - id: FALSIFY-DEMO-001
    rule: r
    prediction: p
    test: t
    if_fails: f
    status: FUNCTIONAL
    live_requirements:
      device: cuda
    algorithm_evidence:
      file_paths:
        - src/algo.py
  - id: FALSIFY-DEMO-002
    rule: r
    prediction: p
    test: t
    if_fails: f
    status: PARTIAL_ALGORITHM_LEVEL
  - id: FALSIFY-DEMO-003
    rule: r
    prediction: p
    test: t
    if_fails: f
    status: BLOCKER_FIXTURE_ABSENT
"""


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.contract = root / "contracts" / "demo-v1.yaml"
        self.evidence = root / "evidence"

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(self.root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                              check=True, capture_output=True, text=True)
        return done.stdout.strip()

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")
        return self.git("rev-parse", "HEAD")

    def set_status(self, fid: str, status: str) -> None:
        from pv.falsify.rewrite import rewrite_statuses

        rewrite_statuses(self.contract, {fid: status})

    def add_evidence(self) -> None:
        from pv.falsify.evidence import hash_files, write_record

        hashes = hash_files(self.root, ["src/algo.py"])
        write_record(self.evidence, make_record("passed", live=True, falsifier="FALSIFY-DEMO-001",
                                                hashes=hashes, finished="2026-11-25T10:00:00.000000Z"))
        write_record(self.evidence, make_record("passed", falsifier="FALSIFY-DEMO-002",
                                                finished="2026-11-25T10:00:00.000000Z"))
        write_record(self.evidence, make_record("skipped", absent=True, falsifier="FALSIFY-DEMO-003",
                                                finished="2026-11-25T10:00:00.000000Z"))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    r = Repo(tmp_path)
    (tmp_path / "contracts").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "algo.py").write_text("def algo():\n    return 1\n")
    r.contract.write_text(CONTRACT)
    r.git("init", "-q", "-b", "main")
    r.add_evidence()
    r.commit("baseline")
    monkeypatch.chdir(tmp_path)
    return r
