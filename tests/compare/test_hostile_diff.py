"""``pv diff`` on hostile captures, manifests and tolerance files (issue: hostile inputs).

Each case is one class of failure once seen as ``pv: internal error``, a hang
or a division by zero. Every one must now end in exit 2 with exactly one
stderr line that names the file, and leave both captures byte for byte as
they were.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.store import aprt, directory
from pv.cli import run

GOOD_FILES = [{"path": "layer-0/attn_norm.bin", "shape": [2, 4], "layout": ["S", "H"]}]


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Turn a hang (a FIFO opened for reading, say) into a test failure."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: bytes of regular files, the kind of the rest."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir" if p.is_dir() else "special"
    return out


def capture(root: Path, manifest: Any = None, values: Any = None, stage: str = "attn_norm") -> Path:
    path = root / directory.relpath_for(stage, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.arange(8, dtype=np.float32) if values is None else np.asarray(values, np.float32)
    aprt.write(path, 0 if stage != "lm_head" else 0xFFFFFFFF, arr)
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (root / directory.MANIFEST).write_text(text, encoding="utf-8")
    return root


def manifest(**fields: Any) -> dict[str, Any]:
    return {"format": "pv-capture", "version": 1, "run": {}, "files": GOOD_FILES, **fields}


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *roots: Path) -> str:
    """Run ``pv diff``; assert exit 2, one stderr line, no internal error, nothing changed."""
    before = [snapshot(r) for r in roots]
    with time_limit(20):
        code = run(["diff", *args])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    assert [snapshot(r) for r in roots] == before
    return lines[0]


def test_reference_capture_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture(tmp_path / "a", manifest()), capture(tmp_path / "b", manifest())
    assert run(["diff", str(a), str(b)]) == 0
    capsys.readouterr()


BAD_MANIFESTS = {
    "files is a number": (manifest(files=5), "'files' must be a list"),
    "run is a string": (manifest(run="x"), "'run' must be an object"),
    "run dtype is a list": (manifest(run={"dtype": [1]}), "'run.dtype' must be a string"),
    "a file record is a number": (manifest(files=[5]), "files[0]: must be an object"),
    "path is a number": (manifest(files=[{"path": 5}]), "'path' must be a string"),
    "shape null": (manifest(files=[{**GOOD_FILES[0], "shape": None}]), "'shape' must be a list"),
    "shape a string": (manifest(files=[{**GOOD_FILES[0], "shape": "ab"}]), "'shape' must be a list"),
    "shape nested": (manifest(files=[{**GOOD_FILES[0], "shape": [[4]]}]), "is not an integer"),
    "shape 2**70": (manifest(files=[{**GOOD_FILES[0], "shape": [2**70]}]), "is not an integer"),
    "shape negative": (manifest(files=[{**GOOD_FILES[0], "shape": [-2, -4]}]), "is not an integer"),
    "shape of booleans": (manifest(files=[{**GOOD_FILES[0], "shape": [True, 8]}]), "is not an integer"),
    "shape of rank 9": (manifest(files=[{**GOOD_FILES[0], "shape": [1] * 9}]), "at most 8"),
    "shape product wraps int64": (
        manifest(files=[{"path": "layer-0/attn_norm.bin", "shape": [2**32 - 1] * 4}]),
        "disagrees with 8 values",
    ),
    "layout a number": (manifest(files=[{**GOOD_FILES[0], "layout": 5}]), "'layout' must be"),
    "layout does not match shape": (
        manifest(files=[{**GOOD_FILES[0], "layout": ["S"]}]),
        "does not match 'shape'",
    ),
    "dtype_captured a mapping": (
        manifest(files=[{**GOOD_FILES[0], "dtype_captured": {"a": 1}}]),
        "'dtype_captured' must be a string",
    ),
    "not_applicable a string": (manifest(not_applicable="abc"), "'not_applicable' must be a list"),
    "not_applicable of numbers": (manifest(not_applicable=[5]), "not_applicable[0]"),
    "top level a list": ([1, 2], "not a pv capture manifest"),
    "nested 100,000 deep": (
        '{"format": "pv-capture", "run": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nested more than",
    ),
    "an integer of 5000 digits": (
        '{"format": "pv-capture", "version": ' + "7" * 5000 + "}",
        "integer literal of 5000 digits",
    ),
    "not UTF-8": ('{"format": "pv-capture", "run": "\udcff"}', None),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    data, expected = BAD_MANIFESTS[case]
    a = tmp_path / "a"
    if case == "not UTF-8":
        capture(a)
        (a / directory.MANIFEST).write_bytes(b'{"format": "pv-capture", "run": "\xff"}')
        expected = "not UTF-8"
    else:
        capture(a, data)
    b = capture(tmp_path / "b", manifest())
    line = refused([str(a), str(b)], capsys, a, b)
    assert str(a / directory.MANIFEST) in line
    assert expected is not None and expected in line


def test_manifest_over_the_size_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directory, "MANIFEST_MAX_BYTES", 1024)
    a = capture(tmp_path / "a", manifest(run={"pad": "x" * 2000}))
    b = capture(tmp_path / "b", manifest())
    assert "larger than 1024 bytes" in refused([str(a), str(b)], capsys, a, b)


@pytest.mark.parametrize("stage", ["attn_norm", "lm_head"])
def test_empty_stage_against_a_non_empty_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str
) -> None:
    """Once a ZeroDivisionError (lm_head's last-row rule divided by an empty side's length)."""
    a = capture(tmp_path / "a", values=np.zeros(0), stage=stage)
    b = capture(tmp_path / "b", stage=stage)
    for x, y in ((a, b), (b, a)):
        with time_limit(20):
            assert run(["diff", str(x), str(y), "--format", "json"]) == 1
        record = json.loads(capsys.readouterr().out)["records"][0]
        assert record["status"] == "error"
        assert "element counts differ" in record["reasons"][0]


@pytest.mark.parametrize("shape", [[2, 0], [0, 5], [4294967295, 0], [3, 0, 0]])
def test_empty_tensors_with_zero_dimensions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: list[int]
) -> None:
    """A zero last dimension once divided by zero when rows were counted."""
    stage = "attn_scores" if len(shape) == 3 else "attn_norm"
    files = [{"path": directory.relpath_for(stage, 0), "shape": shape}]
    a = capture(tmp_path / "a", manifest(files=files), values=np.zeros(0), stage=stage)
    b = capture(tmp_path / "b", manifest(files=files), values=np.zeros(0), stage=stage)
    with time_limit(20):
        assert run(["diff", str(a), str(b), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)["records"][0]
    assert record["status"] == "pass" and record["metrics"]["count"] == 0


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_where_a_stage_file_is_expected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture(tmp_path / "a"), capture(tmp_path / "b")
    (a / "layer-0" / "attn_norm.bin").unlink()
    _fifo(a / "layer-0" / "attn_norm.bin")
    line = refused([str(a), str(b)], capsys, a, b)
    assert "attn_norm.bin: APRT file is not a regular file" in line
    # a whole-model stage at the top of the directory, and a single-file comparison
    _fifo(b / "lm_head.bin")
    capture(tmp_path / "c", stage="lm_head")
    refused([str(tmp_path / "c"), str(b)], capsys, b)
    refused([str(b / "lm_head.bin"), str(tmp_path / "c" / "lm_head.bin")], capsys, b)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_where_the_manifest_is_expected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture(tmp_path / "a"), capture(tmp_path / "b")
    _fifo(a / directory.MANIFEST)
    assert "manifest is not a regular file" in refused([str(a), str(b)], capsys, a, b)


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self/mem", "/proc/self/status"])
def test_stage_file_linked_to_a_device_or_proc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    if not os.path.exists(target):
        pytest.skip(f"{target} does not exist here")
    a, b = capture(tmp_path / "a"), capture(tmp_path / "b")
    (a / "layer-0" / "attn_norm.bin").unlink()
    (a / "layer-0" / "attn_norm.bin").symlink_to(target)
    line = refused([str(a), str(b)], capsys, a, b)
    assert "not a regular file" in line or "/proc or /sys path" in line


TOLERANCE_FILES = {
    "deep.yaml": ("[" * 100_000 + "]" * 100_000, "nested more than"),
    "deep-block.yaml": ("- " * 100_000 + "x", "nested more than"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "nested more than"),
    "huge-int.yaml": ("rtol: " + "9" * 5000, "integer literal of 5000 characters"),
    "huge-int.json": ('{"rtol": ' + "9" * 5000 + "}", "integer literal of 5000 digits"),
    "float-overflow.yaml": ("rtol: " + "9" * 400, "integer literal of 400 characters"),
    "sexagesimal.yaml": ("rtol: " + ":".join(["59"] * 60), "integer literal of"),
    "bad-float-tag.yaml": ("rtol: !!float x", "is not a valid !!float"),
    "bad-int-tag.yaml": ("rtol: !!int abc", "is not a valid !!int"),
    "python-tag.yaml": ("rtol: !!python/object/apply:os.system [echo hi]", "is not plain data"),
    "binary-tag.yaml": ("rtol: !!binary aGk=", "is not plain data"),
    "boolean.yaml": ("rtol: true", "expected a number"),
    "a list.yaml": ("rtol: [1, 2]", "expected a number"),
    "newline-key.yaml": ('"a\\nb": 1', "unknown key"),
    "stage-key-list.yaml": ("stages: {[a]: {rtol: 1}}", "invalid YAML"),
    "stage-key-number.yaml": ("stages: {5: {rtol: 1}}", "is not a stage name"),
    "dtype-key-number.yaml": ("dtypes: {5: {rtol: 1}}", "unknown dtype"),
    "alias-bomb.yaml": (
        "a: &a [1,1,1,1,1,1,1,1,1]\n"
        + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcde", "bcdef")),
        "values once aliases expand",
    ),
    "top-level-list.yaml": ("[1, 2]", "expected a mapping"),
    "empty.yaml": ("", "is empty"),
    "nan.json": ('{"rtol": NaN}', "non-negative"),
}


@pytest.mark.parametrize("name", list(TOLERANCE_FILES))
def test_bad_tolerance_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    text, expected = TOLERANCE_FILES[name]
    a, b = capture(tmp_path / "a"), capture(tmp_path / "b")
    cfg = tmp_path / name
    cfg.write_text(text, encoding="utf-8")
    line = refused([str(a), str(b), "--config", str(cfg)], capsys, a, b, tmp_path)
    assert str(cfg) in line
    assert expected is None or expected in line


@pytest.mark.parametrize("where", ["fifo", "/dev/zero", "/proc/self/status", "not-utf8", "big"])
def test_tolerance_file_that_is_not_a_small_text_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    a, b = capture(tmp_path / "a"), capture(tmp_path / "b")
    cfg = tmp_path / "tol.yaml"
    if where == "fifo":
        _fifo(cfg)
    elif where == "not-utf8":
        cfg.write_bytes(b"rtol: \xff\xfe")
    elif where == "big":
        cfg.write_text("# " + "x" * (2 * 1024 * 1024))
    else:
        if not os.path.exists(where):
            pytest.skip(f"{where} does not exist here")
        cfg.symlink_to(where)
    line = refused([str(a), str(b), "--config", str(cfg)], capsys, a, b)
    assert str(cfg) in line
