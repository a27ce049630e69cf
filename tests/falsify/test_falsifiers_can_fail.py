"""The project's own falsifiers refute broken implementations: each planted attention fault, and a
fused attention path that disagrees with its own probabilities, make FALSIFY-ATTN-SUB-002's checks fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

FALSIFIERS = Path(__file__).resolve().parents[2] / "falsifiers" / "test_attn_sub_stages.py"


@pytest.fixture(scope="module")
def falsifiers() -> Any:
    spec = importlib.util.spec_from_file_location("attn_sub_stage_falsifiers", FALSIFIERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic() -> Any:
    from pv.capture.model.load import load_model

    return load_model("synthetic")


@pytest.fixture(scope="module")
def reference(synthetic: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pv.capture.trace import capture

    return capture(synthetic, tokens=[3, 17, 42, 101, 7, 250, 64, 9], engine="hf",
                   output=tmp_path_factory.mktemp("ref") / "cap").output


def _faulted(synthetic: Any, name: str, out: Path) -> Path:
    from pv.capture.faults import FAULTS, FaultSpec
    from pv.capture.trace import capture

    return capture(synthetic, tokens=[3, 17, 42, 101, 7, 250, 64, 9], output=out,
                   fault=FaultSpec(FAULTS[name], 1)).output


def test_the_clean_engine_passes(falsifiers: Any, synthetic: Any, reference: Path, tmp_path: Path) -> None:
    from pv.capture.trace import capture

    clean = capture(synthetic, tokens=[3, 17, 42, 101, 7, 250, 64, 9], output=tmp_path / "cap").output
    falsifiers._check_capture(clean, synthetic.config, full_scores=True)
    assert falsifiers._engines_agree(clean, reference, synthetic) > 0.9999


@pytest.mark.parametrize("name", ["gqa_head_mapping", "mask_off_by_one", "score_scale_1_over_d",
                                  "softmax_wrong_axis"])
def test_each_attention_fault_is_refuted(falsifiers: Any, synthetic: Any, reference: Path, tmp_path: Path,
                                         name: str) -> None:
    faulted = _faulted(synthetic, name, tmp_path / "cap")
    # The capture's own consistency catches it, or else the comparison with the oracle does.
    with pytest.raises(AssertionError):
        falsifiers._check_capture(faulted, synthetic.config, full_scores=True)
        falsifiers._engines_agree(faulted, reference, synthetic)


def test_attention_that_disagrees_with_its_probabilities_is_refuted(falsifiers: Any, synthetic: Any,
                                                                    tmp_path: Path) -> None:
    """A fused kernel whose output is not softmax . v (the scores and softmax captured fine)."""
    from pv.capture.store import aprt, directory
    from pv.capture.store.writer import reseal
    from pv.capture.trace import capture

    cap = capture(synthetic, tokens=[3, 17, 42, 101, 7, 250, 64, 9], output=tmp_path / "cap").output
    entry = next(e for e in directory.open_capture(cap).entries if (e.stage, e.layer) == ("attention", 2))
    _, values = aprt.read(entry.path, tuple(entry.shape))
    broken = np.array(values, dtype=np.float32).reshape(entry.shape)
    broken[-1] *= 1.01  # the last position's attention off by 1 %
    aprt.write(entry.path, entry.header.layer, broken)
    reseal(cap)
    with pytest.raises(AssertionError, match="attention differs from softmax . v"):
        falsifiers._check_capture(cap, synthetic.config, full_scores=True)
