"""A git repository whose statuses came from ``pv falsify`` (the honest path), for status and gate tests.

Built once per session (a real ``pv falsify`` run in a subprocess, then a commit) and
copied for each test, so every test starts from a clean tree that the gate accepts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "falsify"))

from demo_project import DemoProject, make_demo


class Repo(DemoProject):
    def set_status(self, fid: str, status: str) -> None:
        from pv.falsify.rewrite import rewrite_statuses

        rewrite_statuses(self.contract, {fid: status})

    def falsify(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``pv falsify`` in a subprocess, as a user runs it."""
        import os

        return subprocess.run([sys.executable, "-m", "pv.cli", *self.args(*extra)], cwd=self.root,
                              capture_output=True, text=True, check=False,
                              env={**os.environ, **(env or {})})

    def record(self, fid: str, newest: int = -1) -> Path:
        from pv.falsify.store import load_stored

        return load_stored(self.evidence, "demo-v1", fid)[newest].path


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate-template")
    demo = make_demo(root)
    repo = Repo(demo.root)
    repo.behave(two_live="skip-absent", three="skip-absent")
    done = repo.falsify(env={"PV_EVIDENCE_KEY": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    repo.commit("pv falsify: first evidence")
    return root


@pytest.fixture
def repo(_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """001 FUNCTIONAL (no live requirements), 002 PARTIAL_ALGORITHM_LEVEL, 003 BLOCKER_FIXTURE_ABSENT."""
    root = tmp_path / "repo"
    shutil.copytree(_template, root, symlinks=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("PV_EVIDENCE_KEY", raising=False)
    return Repo(root)
