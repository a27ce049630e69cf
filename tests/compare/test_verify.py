"""Captured files are compared only while they have the digest their manifest records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
