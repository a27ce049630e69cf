"""The real-weights models, one fixture each, for every test folder and the falsifiers.

pytest loads this file (it sits in the rootdir) for ``tests/`` and ``falsifiers/``
alike, so a test asks for a model by fixture name and never looks for the file
itself. Where the file is absent the test is skipped as ``fixture absent`` (the
prefix ``pv falsify`` reads as BLOCKER_FIXTURE_ABSENT); under ``CI=true``, which
fetches both models, an absent file is a failure.

- ``smollm2_gguf``: SmolLM2-135M-Instruct, GGUF Q4_1 (``scripts/fetch_smollm2.py``;
  ``PV_SMOLLM2_GGUF`` names another copy), and ``smollm2``, it loaded once per session.
- ``gemma3_gguf``: Gemma 3 270M, GGUF Q4_K_M (``scripts/fetch_gemma3.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

MODELS = Path(__file__).resolve().parent / "models"
SMOLLM2_DEFAULT = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_DEFAULT = MODELS / "gemma-3-270m-q4_k_m.gguf"


def _present(path: Path, what: str, fetch: str) -> Path:
    """``path`` when it is a file; else a skip (fixture absent), or a failure under CI."""
    if path.is_file():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the {what} at {path} (python {fetch})")
    from pv.falsify.plugin import fixture_absent

    fixture_absent(f"{what} not present at {path} ({fetch} fetches it)")
    raise AssertionError("unreachable: fixture_absent skips")  # pragma: no cover


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF (``PV_SMOLLM2_GGUF`` overrides the default path)."""
    path = Path(os.environ.get("PV_SMOLLM2_GGUF") or SMOLLM2_DEFAULT)
    return _present(path, "SmolLM2 GGUF", "scripts/fetch_smollm2.py")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Any:
    """SmolLM2 as a ``LoadedModel``, dequantised once per test session."""
    from pv.capture.model.load import load_model

    return load_model(str(smollm2_gguf))


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """The Gemma 3 270M GGUF."""
    return _present(GEMMA3_DEFAULT, "Gemma 3 GGUF", "scripts/fetch_gemma3.py")
