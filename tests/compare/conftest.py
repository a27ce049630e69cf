"""Helpers for the compare tests: tiny capture directories written by hand, and the real model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter


def write_capture(
    root: Path,
    tensors: dict[tuple[str, int | None], np.ndarray],
    *,
    manifest: bool = True,
    dtype: str = "float32",
) -> Path:
    """Write ``{(stage, layer): array}`` as a capture directory (with or without a manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    if manifest:
        with CaptureWriter(root, {"dtype": dtype}) as w:
            for (stage, layer), arr in tensors.items():
                w.write(stage, layer, np.asarray(arr, dtype=np.float32), dtype_captured=dtype)
    else:
        from pv import stages as stage_table

        for (stage, layer), arr in tensors.items():
            path = root / directory.relpath_for(stage, layer)
            path.parent.mkdir(parents=True, exist_ok=True)
            aprt.write(path, stage_table.get(stage).header_layer(layer), arr)
    return root


@pytest.fixture
def make_capture(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, tensors: dict[tuple[str, int | None], Any], **kw: Any) -> Path:
        return write_capture(
            tmp_path / name, {k: np.asarray(v, np.float32) for k, v in tensors.items()}, **kw
        )

    return make


