"""pytest plugin binding tests to contract falsifiers (loaded via the ``pytest11`` entry point)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "falsifies(*ids): bind this test to contract falsifier ids such as FALSIFY-ATTN-SUB-001",
    )
