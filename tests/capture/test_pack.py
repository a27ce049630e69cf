"""Packed captures (pv.capture.store.pack): one stages.pack read by every reader as the stage files it holds."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import blake3
import numpy as np
import pytest

from pv.capture.store import aprt
from pv.capture.store.directory import open_capture
from pv.capture.store.member import PackedPath
from pv.capture.store.pack import PACK, PackWriter, unpack
from pv.capture.store.writer import CaptureWriter, reseal
from pv.compare.diff import diff_captures

STAGES = [("embedding", 0, (5, 16)), ("attn_norm", 0, (5, 16)), ("attn_scores", 0, (2, 5, 5)),
          ("attn_norm", 1, (5, 16)), ("attn_scores", 1, (2, 5, 5)), ("final_norm", None, (5, 16)),
          ("lm_head", None, (5, 4000))]  # 80 kB: written from the array, not copied


def _arrays(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _, _, shape in STAGES]


def _write(root: Path, kind: type[CaptureWriter], arrays: list[np.ndarray]) -> CaptureWriter:
    writer = kind(root, {"engine": "test"})
    for (stage, layer, _), arr in zip(STAGES, arrays):
        writer.write(stage, layer, arr, dtype_captured="float32")
    writer.close()
    return writer


def test_members_are_the_files_they_replace(tmp_path: Path) -> None:
    arrays = _arrays()
    _write(tmp_path / "files", CaptureWriter, arrays)
    _write(tmp_path / "packed", PackWriter, arrays)
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["manifest.json", PACK]
    pack = (tmp_path / "packed" / PACK).read_bytes()
    man = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    plain = {r["path"]: r for r in json.loads((tmp_path / "files" / "manifest.json").read_text())["files"]}
    for rec in man["files"]:
        raw = (tmp_path / "files" / rec["path"]).read_bytes()
        assert pack[rec["offset"]:rec["offset"] + len(raw)] == raw  # the member is the file, byte for byte
        assert rec["blake3"] == plain[rec["path"]]["blake3"] == blake3.blake3(raw).hexdigest()
    # Every reader reads a member as the file: open_capture, read, memmap, chunked values, digests.
    packed, files = open_capture(tmp_path / "packed"), open_capture(tmp_path / "files")
    assert [e.key for e in packed.entries] == [e.key for e in files.entries]
    for a, b in zip(packed.entries, files.entries):
        assert isinstance(a.path, PackedPath) and a.path.relative_to(packed.root) == b.path.relative_to(files.root)
        assert a.header == b.header and a.shape == b.shape
        assert np.array_equal(aprt.read(a.path)[1], aprt.read(b.path)[1])
        assert np.array_equal(aprt.memmap(a.path)[1], aprt.read(b.path)[1])
        chunks = [c.copy() for c in aprt.iter_values(a.path, chunk=7)]  # the generator reuses its buffer
        assert np.array_equal(np.concatenate(chunks), aprt.read(b.path)[1])
        for algorithm in aprt.DIGESTS:
            assert aprt.digest_file(a.path, algorithm) == aprt.digest_file(b.path, algorithm)
        reader = aprt.ValueReader(a.path, a.meta, chunk=3)
        reader.take(2, 5)
        assert reader.verify() is None
        reader.close()
    assert diff_captures(tmp_path / "packed", tmp_path / "files").ok
    assert reseal(tmp_path / "packed") == 0


def test_a_changed_or_cut_member_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "packed"
    _write(root, PackWriter, _arrays())
    entry = open_capture(root).by_key()[("attn_norm", 1)]
    assert isinstance(entry.path, PackedPath)
    with open(root / PACK, "r+b") as f:
        f.seek(entry.path.offset + aprt.HEADER_SIZE + 8)
        f.write(b"\x00\x00\x80\x7f")
    problem = aprt.digest_problem(entry.path, entry.meta)
    assert problem is not None and "layer-1/attn_norm.bin: contents differ from the blake3" in problem
    report = diff_captures(root, root)
    bad = [r for r in report.records if r.bad]
    assert [(r.stage, r.layer) for r in bad] == [("attn_norm", 1)]
    assert any("contents differ" in reason for reason in bad[0].reasons)
    # The other members are untouched; cut the pack inside the last one and it is truncated.
    last = open_capture(root).by_key()[("lm_head", None)]
    assert isinstance(last.path, PackedPath)
    with open(root / PACK, "r+b") as f:
        f.truncate(last.path.offset + aprt.HEADER_SIZE + 4)
    with pytest.raises(aprt.AprtError, match="truncated"):
        open_capture(root)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("pack", "../elsewhere", "'pack' must name a file beside the manifest"),
    ("pack", 3, "'pack' must name a file beside the manifest"),
    ("offset", -1, "'offset' must be a byte offset"),
    ("offset", True, "'offset' must be a byte offset"),
    ("path", "../layer-0/attn_norm.bin", "'path' of a pack member must be"),
])
def test_a_manifest_naming_a_bad_member_is_refused(tmp_path: Path, field: str, value: object,
                                                   message: str) -> None:
    root = tmp_path / "packed"
    _write(root, PackWriter, _arrays())
    man = json.loads((root / "manifest.json").read_text())
    man["files"][1][field] = value
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(aprt.AprtError, match=message):
        open_capture(root)


def test_unpack_gives_the_files_back(tmp_path: Path) -> None:
    arrays = _arrays()
    _write(tmp_path / "files", CaptureWriter, arrays)
    root = tmp_path / "packed"
    _write(root, PackWriter, arrays)
    assert unpack(root) == len(STAGES)
    assert not (root / PACK).exists()
    for rec in json.loads((root / "manifest.json").read_text())["files"]:
        assert "pack" not in rec and "offset" not in rec
        assert (root / rec["path"]).read_bytes() == (tmp_path / "files" / rec["path"]).read_bytes()
    assert all(not isinstance(e.path, PackedPath) for e in open_capture(root).entries)
    assert unpack(root) == 0  # nothing packed any more
    assert diff_captures(root, tmp_path / "files").ok


def test_threads_share_one_pack_and_abort_leaves_nothing(tmp_path: Path) -> None:
    """Writer threads store at once (as DiskTap's do): each member lands whole at its offset."""
    writer = PackWriter(tmp_path / "packed", {})
    writer.FLUSH_BYTES = 1000  # flush often, while other threads store
    rng = np.random.default_rng(1)
    arrays = {layer: rng.standard_normal((3, 50 + layer)).astype(np.float32) for layer in range(40)}
    records: dict[int, dict[str, object]] = {}

    def work(layers: range) -> None:
        for layer in layers:
            records[layer] = writer.store("ffn_out", layer, arrays[layer], dtype_captured="float32")

    threads = [threading.Thread(target=work, args=(range(k, 40, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for layer in range(40):
        writer.add(records[layer])
    writer.close()
    capture = open_capture(tmp_path / "packed")
    for entry in capture.entries:
        assert np.array_equal(aprt.read(entry.path, entry.shape)[1], arrays[entry.layer or 0])
        assert aprt.digest_problem(entry.path, entry.meta) is None
    failed = PackWriter(tmp_path / "failed", {})
    failed.store("ffn_out", 0, arrays[0], dtype_captured="float32")
    failed.abort()
    assert list((tmp_path / "failed").iterdir()) == []
