"""Shared fixtures for the contract tests: a minimal valid contract and a file writer."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

#: A small contract that passes every rule (evidence checks off: it cites no files).
VALID = textwrap.dedent("""\
    # yaml-language-server: $schema=../schemas/contract.schema.json
    metadata:
      id: demo-v1
      version: "1.0.0"
      description: A demonstration contract.
      references:
        - "a reference"
      status: PROPOSED
      depends_on: []
    equations:
      scale:
        formula: "y = x / sqrt(d)"
        domain: "x ∈ ℝ^d"
    proof_obligations:
      - id: DEMO-OB-1
        type: invariant
        property: "output is finite"
    falsification_tests:
      - id: FALSIFY-DEMO-001
        rule: "scaling keeps values finite"
        prediction: "every output is finite"
        test: "tests/test_demo.py::test_finite"
        if_fails: "the scale overflows"
        status: PROPOSED
      - id: FALSIFY-DEMO-002
        rule: "scaling is linear"
        prediction: "f(2x) = 2 f(x)"
        test: "tests/test_demo.py::test_linear"
        if_fails: "the kernel is not linear"
    """)

Writer = Callable[..., Path]


@pytest.fixture
def valid_text() -> str:
    return VALID


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """``write(text, name="c.yaml", folder=None)`` -> the path written (bytes allowed)."""

    def _write(text: str | bytes, name: str = "demo-v1.yaml", folder: Path | None = None) -> Path:
        target = (folder or tmp_path) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
        return target

    return _write
