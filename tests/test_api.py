"""The public API: ``import pv`` is cheap, and each entry point returns the data its command prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pv
from pv.contract.validate import Report

REPO = Path(__file__).resolve().parents[1]


def test_import_pv_loads_nothing_heavy():
    code = ("import sys, pv; pv.validate; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'jsonschema') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_names_are_documented():
    doc = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    for name in ("validate", "trace", "diff", "bisect", "status", "gate"):
        assert callable(getattr(pv, name))
        assert f"pv.{name}(" in doc, name
    with pytest.raises(AttributeError):
        pv.no_such_thing  # noqa: B018


def test_validate_returns_the_report_the_cli_prints(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("metadata: {version: 1.0, description: d}\n", encoding="utf-8")
    report = pv.validate([path], check_evidence=False)
    assert isinstance(report, Report) and report.ok
    assert sorted(f.rule for f in report.findings) == ["PV011", "PV027"]


def _capture(root: Path, scale: float) -> Path:
    from pv.capture.store.writer import CaptureWriter
    with CaptureWriter(root, {"dtype": "float32"}) as w:
        w.write("embedding", 0, np.ones((4, 8), np.float32), dtype_captured="float32")
        w.write("attn_norm", 0, np.full((4, 8), scale, np.float32), dtype_captured="float32")
    return root


def test_diff_and_bisect_on_captures(tmp_path):
    a = _capture(tmp_path / "a", 2.0)
    b = _capture(tmp_path / "b", 1.0)
    report = pv.diff(a, b)
    assert not report.ok
    result = pv.bisect(a, b)
    assert result.first_divergence == {"layer": 0, "stage": "attn_norm"}
    assert result.last_good is not None and result.last_good.stage == "embedding"
    assert pv.diff(b, b).ok


def test_trace_is_a_function_and_the_capture_package_a_plain_package():
    code = ("import sys, types, pv; trace = pv.trace; import pv.capture.store.aprt; "
            "print(type(pv.capture) is types.ModuleType, callable(pv.capture), trace is pv.api.trace, "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True False True False"


def test_trace_captures_as_pv_trace_does(tmp_path):
    pytest.importorskip("torch")
    result = pv.trace("synthetic", output=tmp_path / "cap", tokens="3,17,42", stages="attn_norm,lm_head",
                      layers="1")
    assert result.files == 2 and result.token_ids == [3, 17, 42]
    assert result.manifest["run"]["engine"] == "pv"
