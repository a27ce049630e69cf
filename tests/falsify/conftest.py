"""The throw-away demo project as a fixture (see ``demo_project``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_project import DemoProject, make_demo


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DemoProject:
    project = make_demo(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PV_EVIDENCE_KEY", raising=False)
    return project
