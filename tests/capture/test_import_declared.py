"""``pv import`` records what a dump says about its run: each tensor's dtype as dumped, the
engine's compute dtype where a mapping or ``--dtype`` declares it, and the token ids; the
float16 engine of a user's report is judged as half precision, not as float32."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv import stages as stage_table
from pv.capture.importer import declared, mapping
from pv.capture.store import aprt, directory
from pv.cli import run
from pv.compare.diff import diff_captures
from pv.errors import PvError

TOKENS = [5, 9, 33, 120, 77, 3, 8, 250]


def _mapping(path: Path, stages: list[str], extra: str = "") -> Path:
    """One rule per stage for dumps named ``layers.N.STAGE`` / ``STAGE`` (a plain-function engine's)."""
    rules = []
    for s in stages:
        if stage_table.get(s).scope == "model":
            rules.append(f"  - {{match: '{s}', stage: {s}}}")
        else:
            rules.append(f"  - {{match: 'layers\\.(?P<layer>\\d+)\\.{s}', stage: {s}}}")
    path.write_text("format: pv-mapping\nversion: 1\nname: fn-engine\n" + extra + "rules:\n"
                    + "\n".join(rules) + "\n")
    return path


def _dump(cap: Path, out: Path, dtype: Any, ids: bool = False) -> list[str]:
    """A capture's tensors as another engine would save them, in ``dtype``; the stages it holds."""
    c = directory.open_capture(cap)
    arrays: dict[str, np.ndarray] = {}
    for e in c.entries:
        name = e.stage if stage_table.get(e.stage).scope == "model" else f"layers.{e.layer}.{e.stage}"
        arrays[name] = aprt.read(e.path, e.shape)[1].astype(dtype)
    if ids:
        arrays["input_ids"] = np.array([TOKENS], np.int64)
    np.savez(out, **arrays)
    return sorted({e.stage for e in c.entries}, key=lambda s: stage_table.get(s).order)


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A float16 run of pv's engine (the engine under test) and a float32 reference."""
    pytest.importorskip("torch")
    from pv.capture.trace import capture

    root = tmp_path_factory.mktemp("f16")
    capture("synthetic", tokens=TOKENS, output=root / "half", dtype="float16")
    capture("synthetic", tokens=TOKENS, output=root / "ref")
    return root / "half", root / "ref"


def _files(cap: Path) -> list[dict[str, Any]]:
    return list(json.loads((cap / "manifest.json").read_text())["files"])


def test_float16_dump_is_judged_as_float16(captures: tuple[Path, Path], tmp_path: Path) -> None:
    half, ref = captures
    stages = _dump(half, tmp_path / "d.npz", np.float16)
    m = _mapping(tmp_path / "m.yaml", stages)
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m), "-o", str(tmp_path / "imp")]) == 0
    assert {f["dtype_captured"] for f in _files(tmp_path / "imp")} == {"float16"}
    report = diff_captures(tmp_path / "imp", ref)
    assert report.ok, [r.label for r in report.records if r.bad][:5]
    assert {r.dtype for r in report.compared} == {"float16"}


def test_upcast_dump_needs_its_dtype_declared(captures: tuple[Path, Path], tmp_path: Path) -> None:
    """The same values saved as float32: judged as float32 they fail (the user's report); declared
    by --dtype or by the mapping they pass."""
    half, ref = captures
    stages = _dump(half, tmp_path / "d.npz", np.float32)
    m = _mapping(tmp_path / "m.yaml", stages)
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m), "-o", str(tmp_path / "plain")]) == 0
    plain = diff_captures(tmp_path / "plain", ref)
    assert not plain.ok and {r.dtype for r in plain.compared} == {"float32"}
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m), "--dtype", "float16",
                "-o", str(tmp_path / "flag")]) == 0
    run_block = json.loads((tmp_path / "flag" / "manifest.json").read_text())["run"]
    assert run_block["dtype"] == "float16"
    assert {f["dtype_captured"] for f in _files(tmp_path / "flag")} == {"float32"}
    assert diff_captures(tmp_path / "flag", ref).ok
    m16 = _mapping(tmp_path / "m16.yaml", stages, "dtype: float16\n")
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m16), "-o", str(tmp_path / "mapped")]) == 0
    assert diff_captures(tmp_path / "mapped", ref).ok


def _safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, (kind, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_bfloat16_and_integer_tensors_keep_their_dtype(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
    _safetensors(tmp_path / "d.safetensors", {"layers.0.attn_norm": ("BF16", bf16),
                                              "layers.0.ffn_norm": ("F32", x)})
    read = {k: kind for k, (_, kind) in __import__("pv.capture.importer.dumps", fromlist=["x"])
            .read_typed(tmp_path / "d.safetensors").items()}
    assert read == {"layers.0.attn_norm": "bfloat16", "layers.0.ffn_norm": "float32"}
    m = _mapping(tmp_path / "m.yaml", ["attn_norm", "ffn_norm"])
    assert run(["import", str(tmp_path / "d.safetensors"), "--mapping", str(m), "-o", str(tmp_path / "o")]) == 0
    assert {f["stage"]: f["dtype_captured"] for f in _files(tmp_path / "o")} == {
        "attn_norm": "bfloat16", "ffn_norm": "float32"}
    assert declared.captured({"int32"}) == ("float32", "int32")  # expert indices: exact, not quantized
    assert declared.captured({"float32", "float16"}) == ("float16", None)  # the least precise part


def test_tokens_recorded_from_flag_or_dump(captures: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    half, _ = captures
    stages = _dump(half, tmp_path / "d.npz", np.float16, ids=True)
    plain = _mapping(tmp_path / "m.yaml", stages)
    with_ids = _mapping(tmp_path / "ids.yaml", stages, "tokens: input_ids\n")
    ids = ",".join(map(str, TOKENS))
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(plain), "--tokens", ids,
                "-o", str(tmp_path / "flag")]) == 0
    assert "ignored 1 unmapped name(s): input_ids" in capsys.readouterr().out
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(with_ids), "-o", str(tmp_path / "dump")]) == 0
    assert "input_ids" not in capsys.readouterr().out  # read as the ids, not listed as ignored
    for out in ("flag", "dump"):
        assert json.loads((tmp_path / out / "manifest.json").read_text())["run"]["token_ids"] == TOKENS
    wrong = ",".join(map(str, [*TOKENS[:-1], 7]))
    cases = [
        (["--mapping", str(with_ids), "--tokens", wrong], "differs from the dump's 'input_ids'"),
        (["--mapping", str(plain), "--tokens", "1,2,3"], "the token ids are 3 but"),
        (["--mapping", str(plain), "--tokens", ids + ",999", "--model", "synthetic"], "out of range"),
    ]
    for i, (args, message) in enumerate(cases):
        code = run(["import", str(tmp_path / "d.npz"), *args, "-o", str(tmp_path / f"bad{i}")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_mapping_without_its_tokens_tensor_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "d.npz", **{"layers.0.attn_norm": np.zeros((3, 64), np.float32)})
    m = _mapping(tmp_path / "m.yaml", ["attn_norm"], "tokens: input_ids\n")
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m), "-o", str(tmp_path / "o")]) == 2
    assert "reads the token ids from 'input_ids'" in capsys.readouterr().err
    assert run(["import", str(tmp_path / "d.npz"), "--mapping", str(m), "--tokens", "1,2,3",
                "-o", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize(("extra", "message"), [
    ("dtype: float8\n", "dtype: unknown dtype"),
    ("tokens: '('\n", "tokens is not a valid regular expression"),
    ("tokens: 3\n", "tokens is the name"),
])
def test_bad_declarations_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str,
                                       message: str) -> None:
    m = _mapping(tmp_path / "m.yaml", ["attn_norm"], extra)
    assert run(["import", "--mapping", str(m), "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(m) in err and len(err.strip().splitlines()) == 1


def test_check_validates_a_mapping_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As docs/engines.md says: no dump, no --output; what --check would not read is refused."""
    assert run(["import", "--mapping", "llama.cpp", "--check"]) == 0
    assert "valid" in capsys.readouterr().out
    for args, message in [
        (["x.npz", "--mapping", "llama.cpp", "--check"], "drop DUMP"),
        (["--mapping", "llama.cpp", "--check", "-o", "o"], "drop --output"),
        (["--mapping", "llama.cpp", "-o", str(tmp_path / "o")], "needs at least one DUMP"),
        (["x.npz", "--mapping", "llama.cpp"], "needs --output"),
    ]:
        assert run(["import", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_help_lists_every_shipped_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["import", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    names = list(mapping.shipped())
    assert len(names) >= 9
    for name in names:
        assert name in text, name


def test_compute_dtype_checked() -> None:
    assert declared.compute_dtype(None, "float16") == "float16"
    assert declared.compute_dtype("bfloat16", "float16") == "bfloat16"  # the command line wins
    assert declared.compute_dtype(None, None) is None
    with pytest.raises(PvError, match="valid dtypes"):
        declared.compute_dtype("int8", None)


def test_the_one_token_check() -> None:
    from pv.capture.tokens import recorded, same_input

    assert same_input([1, 2, 3], [1, 2, 3]) is None
    assert same_input(None, None) is None
    assert "B records no token ids" in (same_input([1, 2], None) or "")
    with pytest.raises(PvError, match="first at position 1: 2 vs 5"):
        same_input([1, 2, 3], [1, 5, 3])
    with pytest.raises(PvError, match="one is a prefix of the other"):
        same_input([1, 2], [1, 2, 3])
    assert recorded({"token_ids": [4, 5]}) == [4, 5]
    assert recorded({"token_ids": [4, True]}) is None and recorded({"token_ids": []}) is None
    assert recorded(None) is None


@pytest.mark.parametrize(("value", "message"), [
    (np.array([[1, 2], [3, 4]]), "token ids are [S] or [1, S]"),
    (np.array([1.0, 2.5]), "not whole numbers"),
    (np.array([1.0, np.nan]), "not whole numbers"),
    (np.array([], np.int64), "token ids are [S] or [1, S]"),
])
def test_bad_token_tensors_are_refused(value: np.ndarray, message: str) -> None:
    with pytest.raises(PvError, match=re.escape(message)):
        declared.tokens_from_dump(value, "input_ids")
    assert declared.tokens_from_dump(np.array([[7.0, 8.0]]), "ids") == [7, 8]
