"""Fixtures shared by every test folder: the real-weights model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

SMOLLM2_DEFAULT = Path(__file__).parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The SmolLM2 GGUF: skipped when absent locally, a failure when absent under CI."""
    path = Path(os.environ.get("PV_SMOLLM2_GGUF", SMOLLM2_DEFAULT))
    if path.is_file():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the SmolLM2 GGUF at {path} (scripts/fetch_smollm2.py)")
    pytest.skip(f"SmolLM2 GGUF not present at {path}")


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> Any:
    """SmolLM2 as a ``LoadedModel`` (dequantised once per test session)."""
    from pv.capture.model.load import load_model

    return load_model(str(smollm2_path))
