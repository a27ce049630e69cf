"""Fixtures shared by every test folder.

The real-weights models come from the root ``conftest.py`` (``smollm2_gguf``,
``smollm2``, ``gemma3_gguf``). ``smollm2_path`` is the name the SmolLM2 file had
here before; tests/compare and tests/cli still ask for it, and it hands on the
root fixture (no search of its own) until they ask for ``smollm2_gguf``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_path(smollm2_gguf: Path) -> Path:
    """The SmolLM2 GGUF, under its former name (see the module docstring)."""
    return smollm2_gguf
