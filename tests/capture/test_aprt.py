"""APRT v1 files and capture directories: bit-exact values, hostile headers, manifests."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pv import stages as stage_table
from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter, manifest_text
from pv.errors import PvError

# Quiet NaN with a payload, signalling NaN, negative NaN, both infinities, both zeros, a subnormal.
SPECIAL_BITS = np.array(
    [0x7FC00001, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000000, 0x00000001,
     0x3F800000],
    dtype="<u4",
)


def special_values() -> np.ndarray:
    return SPECIAL_BITS.view("<f4")


def raw_file(path: Path, magic: bytes, layer: int, count: int, payload: bytes) -> Path:
    path.write_bytes(struct.pack("<4sII", magic, layer, count) + payload)
    return path


def test_layout_of_the_bytes(tmp_path: Path) -> None:
    p = tmp_path / "t.bin"
    aprt.write(p, 7, np.array([1.0, -2.0], dtype=np.float32))
    data = p.read_bytes()
    assert data[:4] == b"APRT"
    assert struct.unpack("<II", data[4:12]) == (7, 2)
    assert np.frombuffer(data[12:], dtype="<f4").tolist() == [1.0, -2.0]
    assert len(data) == 12 + 8


def test_special_values_round_trip_bit_exact(tmp_path: Path) -> None:
    p = tmp_path / "s.bin"
    digest = aprt.write(p, stage_table.MODEL_LAYER, special_values())
    assert digest == aprt.digest_file(p)
    header, values = aprt.read(p)
    assert header == aprt.Header(layer=0xFFFFFFFF, count=SPECIAL_BITS.size)
    assert values.view("<u4").tolist() == SPECIAL_BITS.tolist()
    _, mapped = aprt.memmap(p)
    assert np.asarray(mapped).view("<u4").tolist() == SPECIAL_BITS.tolist()
    chunks = [c.copy() for c in aprt.iter_values(p, chunk=4)]
    assert [c.size for c in chunks] == [4, 4, 1]
    assert np.concatenate(chunks).view("<u4").tolist() == SPECIAL_BITS.tolist()
    assert aprt.encode(0xFFFFFFFF, special_values()) == p.read_bytes()


def test_negative_zero_keeps_its_sign(tmp_path: Path) -> None:
    p = tmp_path / "z.bin"
    aprt.write(p, 0, np.array([-0.0, 0.0], dtype=np.float32))
    _, v = aprt.read(p)
    assert np.signbit(v).tolist() == [True, False]


def test_big_endian_and_float64_input_become_little_endian_float32(tmp_path: Path) -> None:
    p = tmp_path / "b.bin"
    aprt.write(p, 1, np.array([[1.5, 2.5]], dtype=">f4"))
    q = tmp_path / "d.bin"
    aprt.write(q, 1, np.array([[1.5, 2.5]], dtype=np.float64))
    assert p.read_bytes() == q.read_bytes()
    _, v = aprt.read(p, shape=(1, 2))
    assert v.shape == (1, 2) and v.tolist() == [[1.5, 2.5]]


def test_empty_tensor(tmp_path: Path) -> None:
    p = tmp_path / "e.bin"
    aprt.write(p, 0, np.zeros(0, dtype=np.float32))
    assert aprt.read(p)[1].size == 0
    assert aprt.memmap(p)[1].size == 0
    assert list(aprt.iter_values(p)) == []


def test_shape_must_fit(tmp_path: Path) -> None:
    p = tmp_path / "s.bin"
    aprt.write(p, 0, np.zeros(6, dtype=np.float32))
    with pytest.raises(aprt.AprtError, match="do not fit shape"):
        aprt.read(p, shape=(4, 2))


@pytest.mark.parametrize("size", [0, 3, 11])
def test_truncated_header(tmp_path: Path, size: int) -> None:
    p = tmp_path / "t.bin"
    p.write_bytes(b"APRT\x00\x00\x00\x00\x01\x00\x00"[:size])
    with pytest.raises(aprt.AprtError, match="truncated APRT header"):
        aprt.read_header(p)


def test_bad_magic(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "m.bin", b"GGUF", 0, 1, b"\x00" * 4)
    with pytest.raises(aprt.AprtError, match="bad magic"):
        aprt.read(p)


def test_truncated_payload(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "t.bin", b"APRT", 0, 4, b"\x00" * 10)
    with pytest.raises(aprt.AprtError, match="truncated"):
        aprt.read(p)
    with pytest.raises(aprt.AprtError):
        list(aprt.iter_values(p))


def test_trailing_bytes_disagree_with_header(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "l.bin", b"APRT", 0, 1, b"\x00" * 8)
    with pytest.raises(aprt.AprtError, match="length disagrees"):
        aprt.memmap(p)


def test_huge_claim_in_a_tiny_file_is_refused_without_allocating(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "h.bin", b"APRT", 0, 0xFFFFFFFF, b"\x00" * 16)
    tracemalloc.start()
    try:
        for reader in (aprt.read, aprt.memmap, lambda q: list(aprt.iter_values(q))):
            with pytest.raises(aprt.AprtError, match="header claims 4294967295"):
                reader(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # 16 GiB claimed; well under a MiB used


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(aprt.AprtError, match="cannot read"):
        aprt.read_header(tmp_path / "absent.bin")


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(aprt.os, "replace", boom)
    with pytest.raises(OSError):
        aprt.write(tmp_path / "x.bin", 0, np.ones(3, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_capture_files_are_written_in_place_and_match_their_digest(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    with CaptureWriter(root, {}) as w:
        w.write("attn_norm", 1, values, dtype_captured="float32")
    assert sorted(p.name for p in (root / "layer-1").iterdir()) == ["attn_norm.bin"]  # no temp file left
    entry = directory.open_capture(root).entries[0]
    assert entry.meta["blake3"] == aprt.digest_file(root / "layer-1" / "attn_norm.bin")
    assert (root / "layer-1" / "attn_norm.bin").read_bytes() == aprt.encode(1, values)


def test_force_replaces_a_planted_link_and_never_writes_through_it(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        w.write("attn_norm", 1, np.zeros((1, 3), dtype=np.float32), dtype_captured="float32")
        w.write("ffn_up", 1, np.zeros((1, 3), dtype=np.float32), dtype_captured="float32")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    other = tmp_path / "hardlinked.txt"
    other.write_text("keep me too")
    (root / "layer-1" / "attn_norm.bin").unlink()
    (root / "layer-1" / "attn_norm.bin").symlink_to(outside)
    (root / "layer-1" / "ffn_up.bin").unlink()
    (root / "layer-1" / "ffn_up.bin").hardlink_to(other)
    with CaptureWriter(root, {}, overwrite=True) as w:
        w.write("attn_norm", 1, np.ones((1, 3), dtype=np.float32), dtype_captured="float32")
        w.write("ffn_up", 1, np.ones((1, 3), dtype=np.float32), dtype_captured="float32")
    assert outside.read_text() == "keep me"
    assert other.read_text() == "keep me too"
    assert not (root / "layer-1" / "attn_norm.bin").is_symlink()
    assert len(directory.open_capture(root).entries) == 2


def test_a_write_cut_short_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = aprt.os.fdopen

    class FillsUp:
        def __init__(self, f: object) -> None:
            self.f, self.calls = f, 0

        def __enter__(self) -> object:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls > 1:
                raise OSError(28, "No space left on device")
            return self.f.write(data)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(aprt.os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode)))
    root = tmp_path / "cap"
    w = CaptureWriter(root, {})
    with pytest.raises(PvError, match="No space left on device"):
        w.write("attn_norm", 1, np.ones(3, dtype=np.float32), dtype_captured="float32")
    w.abort()
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_relpaths() -> None:
    assert directory.relpath_for("embedding", None) == "layer-0/embedding.bin"
    assert directory.relpath_for("LAYER_OUTPUT", 3) == "layer-3/post_ffn_residual.bin"
    assert directory.relpath_for("lm_head", None) == "lm_head.bin"
    assert directory.relpath_for("final_norm", 5) == "final_norm.bin"
    with pytest.raises(ValueError):
        directory.relpath_for("attn_out", None)


# ---------------------------------------------------------------------------------------- directories


def foreign_capture(root: Path) -> Path:
    """What another engine writes: stage files in the layout, no manifest, some extras."""
    (root / "layer-0").mkdir(parents=True)
    (root / "layer-1").mkdir()
    aprt.write(root / "layer-0" / "embedding.bin", 0, np.arange(6, dtype=np.float32))
    aprt.write(root / "layer-1" / "attn_norm.bin", 1, np.ones(6, dtype=np.float32))
    aprt.write(root / "layer-0" / "attn_norm.bin", 0, np.ones(6, dtype=np.float32))
    aprt.write(root / "layer-0" / "layer_output.bin", 0, np.ones(6, dtype=np.float32))
    aprt.write(root / "lm_head.bin", 0xFFFFFFFF, np.ones(4, dtype=np.float32))
    aprt.write(root / "layer-1" / "embedding.bin", 1, np.ones(6, dtype=np.float32))  # wrong place
    aprt.write(root / "layer-1" / "lm_head.bin", 1, np.ones(4, dtype=np.float32))  # wrong place
    aprt.write(root / "attn_norm.bin", 0, np.ones(6, dtype=np.float32))  # per-layer stage at top
    aprt.write(root / "layer-0" / "kv_cache.bin", 0, np.ones(2, dtype=np.float32))  # unknown name
    (root / "notes.txt").write_text("hello")
    return root


def test_directory_without_manifest(tmp_path: Path) -> None:
    cap = directory.open_capture(foreign_capture(tmp_path / "c"))
    assert cap.manifest is None and cap.not_applicable == ()
    assert [e.key for e in cap.entries] == [
        ("embedding", 0), ("attn_norm", 0), ("post_ffn_residual", 0), ("attn_norm", 1), ("lm_head", None)]
    assert all(e.shape is None and e.layout is None for e in cap.entries)
    assert cap.by_key()[("embedding", 0)].header.count == 6


def test_a_bad_file_in_a_directory_is_reported(tmp_path: Path) -> None:
    root = foreign_capture(tmp_path / "c")
    raw_file(root / "layer-1" / "ffn_out.bin", b"APRT", 1, 100, b"\x00" * 4)
    with pytest.raises(aprt.AprtError, match="ffn_out.bin"):
        directory.open_capture(root)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PvError, match="not a capture directory"):
        directory.open_capture(tmp_path / "nope")


def test_writer_manifest_lists_exactly_what_was_written(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {"engine": "test"}) as w:
        w.write("embedding", 0, np.zeros((2, 3), dtype=np.float32), dtype_captured="float32")
        w.write("attn_scores", 1, np.zeros((4, 2, 2), dtype=np.float32), dtype_captured="bfloat16")
        w.write("lm_head", None, np.zeros((2, 5), dtype=np.float32), dtype_captured="float32")
        w.mark_not_applicable("qkv_bias", "no bias")
        w.mark_not_applicable("qkv_bias", "no bias")
    manifest = json.loads((root / directory.MANIFEST).read_text())
    assert manifest["format"] == "pv-capture" and manifest["run"] == {"engine": "test"}
    assert [f["path"] for f in manifest["files"]] == [
        "layer-0/embedding.bin", "layer-1/attn_scores.bin", "lm_head.bin"]
    scores = manifest["files"][1]
    assert scores["shape"] == [4, 2, 2] and scores["layout"] == ["NH", "S", "S"]
    assert scores["mask"] == "causal" and scores["dtype_captured"] == "bfloat16"
    assert scores["blake3"] == aprt.digest_file(root / "layer-1" / "attn_scores.bin")
    assert manifest["files"][2]["layer"] is None
    assert manifest["not_applicable"] == [{"stage": "qkv_bias", "reason": "no bias"}]
    cap = directory.open_capture(root)
    assert cap.not_applicable == ("qkv_bias",)
    assert cap.by_key()[("attn_scores", 1)].shape == (4, 2, 2)


def test_aborted_capture_has_no_manifest(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with pytest.raises(RuntimeError), CaptureWriter(root, {}) as w:
        w.write("embedding", 0, np.zeros(3, dtype=np.float32), dtype_captured="float32")
        raise RuntimeError("forward failed")
    assert not (root / directory.MANIFEST).exists()


def test_writer_refuses_a_non_empty_directory_and_drops_a_stale_manifest(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        w.write("embedding", 0, np.zeros(3, dtype=np.float32), dtype_captured="float32")
    with pytest.raises(PvError, match="not empty"):
        CaptureWriter(root, {})
    w2 = CaptureWriter(root, {}, overwrite=True)
    assert not (root / directory.MANIFEST).exists()
    w2.abort()


def test_manifest_shape_must_agree_with_the_file(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        w.write("embedding", 0, np.zeros((2, 3), dtype=np.float32), dtype_captured="float32")
    manifest = json.loads((root / directory.MANIFEST).read_text())
    manifest["files"][0]["shape"] = [2, 4]
    (root / directory.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(aprt.AprtError, match="disagrees"):
        directory.open_capture(root)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": "other"}'])
def test_foreign_or_broken_manifest(tmp_path: Path, text: str) -> None:
    root = tmp_path / "cap"
    root.mkdir()
    (root / directory.MANIFEST).write_text(text)
    with pytest.raises(aprt.AprtError):
        directory.open_capture(root)


def test_file_digest_is_blake3_of_every_byte(tmp_path: Path) -> None:
    """The manifest's digest is BLAKE3 of the whole file, header included (what b3sum prints)."""
    import blake3

    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        rec = w.store("attn_norm", 1, special_values(), dtype_captured="float32")
        w.add(rec)
    data = (root / rec["path"]).read_bytes()
    assert rec["blake3"] == blake3.blake3(data).hexdigest()
    assert "sha256" not in rec
    assert aprt.digest_file(root / rec["path"]) == rec["blake3"]
    import hashlib

    assert aprt.digest_file(root / rec["path"], "sha256") == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="unknown digest"):
        aprt.digest_file(root / rec["path"], "md5")


@pytest.mark.parametrize("field", ["blake3", "sha256"])
@pytest.mark.parametrize("value", [7, "ab", "Z" * 64, "A" * 64, None])
def test_manifest_digest_must_be_64_hex_digits(tmp_path: Path, field: str, value: object) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        w.write("embedding", 0, np.zeros((2, 3), dtype=np.float32), dtype_captured="float32")
    manifest = json.loads((root / directory.MANIFEST).read_text())
    manifest["files"][0][field] = value
    (root / directory.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(aprt.AprtError, match=f"'{field}' must be 64 lowercase hex digits"):
        directory.open_capture(root)


def test_an_earlier_manifest_with_sha256_still_opens(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    with CaptureWriter(root, {}) as w:
        w.write("embedding", 0, np.zeros((2, 3), dtype=np.float32), dtype_captured="float32")
    manifest = json.loads((root / directory.MANIFEST).read_text())
    rec = manifest["files"][0]
    rec["sha256"] = aprt.digest_file(root / rec["path"], "sha256")
    del rec["blake3"]
    (root / directory.MANIFEST).write_text(json.dumps(manifest))
    entry = directory.open_capture(root).entries[0]
    assert entry.meta["sha256"] == aprt.digest_file(entry.path, "sha256")


def test_manifest_text_is_json_with_a_line_per_file(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    run = {"model": {"name": "x\u00e9", "dims": [1, 2]}, "note": "line\nbreak"}
    with CaptureWriter(root, run) as w:
        for layer in range(3):
            w.write("attn_norm", layer, np.ones((2, 3), dtype=np.float32), dtype_captured="float32")
        w.mark_not_applicable("qkv_bias", "no bias")
        expected = w.manifest()
    text = (root / directory.MANIFEST).read_text()
    assert json.loads(text) == expected
    assert text == manifest_text(json.loads(text)) and text.endswith("}\n")
    lines = text.splitlines()
    for rec in expected["files"]:
        assert sum(f'"path": "{rec["path"]}"' in line for line in lines) == 1
        assert json.loads(next(line for line in lines if rec["path"] in line).strip().rstrip(",")) == rec
    empty = manifest_text({"format": "pv-capture", "files": [], "not_applicable": []})
    assert json.loads(empty) == {"format": "pv-capture", "files": [], "not_applicable": []}
