"""Captured files are compared only while they have the digest their manifest records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model.load import load_model
from pv.capture.store import aprt, directory
from pv.capture.store.writer import reseal
from pv.capture.trace import capture
from pv.cli import run
from pv.compare.bisect import bisect
from pv.compare.diff import diff_captures
from pv.compare.isolate import isolate
from pv.compare.records import ERROR, FAIL
from pv.errors import PvError

TOKENS = [3, 17, 42, 101, 7, 250]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("verify")
    model = load_model("synthetic")
    capture(model, tokens=TOKENS, output=root / "ref")
    return root / "ref", root


def _edited(pair: tuple[Path, Path], name: str) -> Path:
    """A copy of the reference with one stage's values scaled after it was written."""
    ref, root = pair
    out = root / name
    shutil.copytree(ref, out)
    path = out / "layer-1" / "ffn_up.bin"
    header, values = aprt.read(path)
    aprt.write(path, header.layer, values * 1.5)
    return out


def test_a_file_changed_after_the_capture_is_an_error_not_a_comparison(pair: tuple[Path, Path]) -> None:
    ref, _ = pair
    edited = _edited(pair, "edited")
    report = diff_captures(edited, ref)
    bad = {(r.stage, r.layer): r for r in report.records if r.bad}
    assert list(bad) == [("ffn_up", 1)] and not report.ok
    record = bad[("ffn_up", 1)]
    assert record.status == ERROR and record.metrics is None
    assert record.reasons == ((f"{edited / 'layer-1' / 'ffn_up.bin'}: contents differ from the blake3 its "
                               "manifest records (changed after the capture was written; pass --no-verify to "
                               "compare anyway)"),)
    # The reference side is checked too.
    assert [r.status for r in diff_captures(ref, edited).records if r.bad] == [ERROR]
    # Without the check, the same pair is compared and fails on its values.
    unchecked = diff_captures(edited, ref, verify=False)
    assert [(r.stage, r.layer, r.status) for r in unchecked.records if r.bad] == [("ffn_up", 1, FAIL)]


def test_reseal_records_a_deliberate_edit(pair: tuple[Path, Path]) -> None:
    ref, _ = pair
    edited = _edited(pair, "resealed")
    assert reseal(edited) == 1
    report = diff_captures(edited, ref)
    assert [(r.stage, r.layer, r.status) for r in report.records if r.bad] == [("ffn_up", 1, FAIL)]
    assert reseal(edited) == 0
    bare = pair[1] / "bare"
    bare.mkdir()
    with pytest.raises(aprt.AprtError, match="no manifest.json to record digests in"):
        reseal(bare)


def test_a_manifest_with_sha256_digests_is_checked_as_well(pair: tuple[Path, Path]) -> None:
    ref, root = pair
    older = root / "older"
    shutil.copytree(ref, older)
    manifest = json.loads((older / directory.MANIFEST).read_text())
    for rec in manifest["files"]:
        del rec["blake3"]
        rec["sha256"] = aprt.digest_file(older / rec["path"], "sha256")
    (older / directory.MANIFEST).write_text(json.dumps(manifest))
    assert diff_captures(older, ref).ok
    path = older / "layer-0" / "attn_norm.bin"
    header, values = aprt.read(path)
    aprt.write(path, header.layer, np.nextafter(values, np.float32(np.inf)))  # one ulp: values still pass
    bad = [r for r in diff_captures(older, ref).records if r.bad]
    assert len(bad) == 1 and "differ from the sha256 its manifest records" in bad[0].reasons[0]


def test_cli_diff_and_bisect_check_and_no_verify_skips(pair: tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ref, _ = pair
    edited = _edited(pair, "cli")
    assert run(["diff", str(edited), str(ref)]) == 1
    assert "contents differ from the blake3 its manifest records" in capsys.readouterr().out
    assert run(["diff", str(edited), str(ref), "--no-verify", "--format", "json"]) == 1
    records = json.loads(capsys.readouterr().out)["records"]
    assert [(r["stage"], r["status"]) for r in records if r["status"] != "pass"] == [("ffn_up", "fail")]
    assert run(["bisect", str(edited), str(ref), "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["first_divergence"] == {"layer": 1, "stage": "ffn_up"}
    assert bisect(edited, ref).first is not None and bisect(edited, ref).first.status == ERROR
    assert bisect(edited, ref, verify=False).first.status == FAIL


def test_isolate_reads_only_reference_files_that_match(pair: tuple[Path, Path]) -> None:
    from pv.capture.engine.runner import Engine

    model = load_model("synthetic")
    edited = _edited(pair, "isolate")
    engine = Engine(model)
    with pytest.raises(PvError, match="ffn_up.bin: contents differ from the blake3"):
        isolate(engine, directory.open_capture(edited), config=model.config)
    result = isolate(engine, directory.open_capture(edited), config=model.config, verify=False)
    assert 1 in result.introduced


def test_the_digest_is_checked_in_the_same_pass_as_the_metrics(pair: tuple[Path, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ref, _ = pair
    edited = _edited(pair, "one-pass")
    opened: list[str] = []
    real_open = aprt.ValueReader.__init__

    def counting(self: aprt.ValueReader, path: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(str(path))
        real_open(self, path, *args, **kwargs)

    def no_second_pass(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("a BLAKE3 manifest is checked on the bytes the metrics read, not apart")

    monkeypatch.setattr(aprt.ValueReader, "__init__", counting)
    monkeypatch.setattr(aprt, "digest_file", no_second_pass)
    assert diff_captures(ref, ref).ok
    assert len(opened) == len(set(opened)) * 2  # both sides are the same files: each opened once per side
    report = diff_captures(edited, ref)
    bad = [r for r in report.records if r.bad]
    assert len(bad) == 1 and bad[0].metrics is None and "contents differ from the blake3" in bad[0].reasons[0]


def test_a_file_that_changes_size_after_the_capture_is_read_is_named_as_changed(pair: tuple[Path, Path]) -> None:
    ref, root = pair
    grown = root / "grown"
    shutil.copytree(ref, grown)
    opened = directory.open_capture(grown)
    with open(grown / "layer-0" / "attn_norm.bin", "ab") as f:
        f.write(b"\0\0\0\0")
    bad = [r for r in diff_captures(opened, ref).records if r.bad]
    assert len(bad) == 1 and "attn_norm.bin: contents differ from the blake3" in bad[0].reasons[0]
    unchecked = [r for r in diff_captures(opened, ref, verify=False).records if r.bad]
    assert len(unchecked) == 1 and "length disagrees with the header" in unchecked[0].reasons[0]


def test_value_reader_hashes_what_it_skips_and_what_follows(tmp_path: Path) -> None:
    values = np.arange(1000, dtype=np.float32)
    path = tmp_path / "t.bin"
    record = {"blake3": aprt.write(path, 7, values)}
    reader = aprt.ValueReader(path, record, chunk=64)
    assert reader.header == aprt.Header(7, 1000)
    assert reader.take(100, 164).tolist() == values[100:164].tolist()  # 0..99 read and hashed on the way
    assert reader.take(900, 1000).tolist() == values[900:].tolist()  # a chunk larger than the buffer
    with pytest.raises(ValueError, match="out of order"):
        reader.take(0, 10)
    assert reader.verify() is None
    reader.close()
    partly = aprt.ValueReader(path, record)
    partly.take(0, 10)
    assert partly.verify() is None  # the rest is hashed by verify
    partly.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # past every value the metrics read
    path.write_bytes(bytes(data))
    changed = aprt.ValueReader(path, record)
    changed.take(0, 10)
    assert changed.verify() == aprt.digest_mismatch(path, "blake3")
    changed.close()
    sha = aprt.ValueReader(path, {"sha256": aprt.digest_file(path, "sha256")})
    assert sha.verify() is None
    sha.close()
    unrecorded = aprt.ValueReader(path, {})
    assert unrecorded.verify() is None
    unrecorded.close()


def test_value_reader_refuses_a_file_cut_short_while_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    aprt.write(path, 0, np.ones(4096, np.float32))
    reader = aprt.ValueReader(path, None, chunk=1024)
    reader.take(0, 1024)
    with open(path, "r+b") as f:
        f.truncate(aprt.HEADER_SIZE + 4 * 2000)
    with pytest.raises(aprt.AprtError, match="truncated while reading"):
        reader.take(1024, 4096)
    reader.close()
