"""Partial captures: pv trace --positions A..B --heads H keeps query rows A..B-1 of heads H of the
attention matrices; pv diff compares one with a whole capture by cutting the whole side, numbering
rows by their true position and head, and counting each query's causal keys from its position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pv.capture import tap
from pv.capture.store import aprt, directory
from pv.cli import run
from pv.compare.diff import diff_captures

pytest.importorskip("torch")

TOKENS = "3,17,42,101,7,250,64,9,33,120,77,5"
ROWS, HEADS = (4, 9), (1, 3)


def _trace(out: Path, *extra: str) -> Path:
    assert run(["trace", "--model", "synthetic", "--tokens", TOKENS, "--save-tensor", "all", "-o", str(out),
                *extra]) == 0
    return out


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("partial")
    cut = ("--positions", "4..9", "--heads", "1,3")
    return {
        "whole_pv": _trace(root / "whole_pv"),
        "whole_hf": _trace(root / "whole_hf", "--engine", "hf"),
        "part_pv": _trace(root / "part_pv", *cut),
        "part_bad": _trace(root / "part_bad", *cut, "--inject-fault", "mask_off_by_one@1"),
    }


def test_a_partial_capture_holds_the_slice_of_the_whole(captures: dict[str, Path]) -> None:
    part, whole = directory.open_capture(captures["part_pv"]), directory.open_capture(captures["whole_pv"])
    assert part.manifest["run"]["slice"] == {"positions": list(ROWS), "heads": list(HEADS)}
    for key, entry in part.by_key().items():
        full = aprt.read(whole.by_key()[key].path)[1].reshape(whole.by_key()[key].shape)
        values = aprt.read(entry.path)[1].reshape(entry.shape)
        if key[0] in ("attn_scores", "attn_softmax"):
            assert entry.shape == (2, 5, 12) and entry.meta["slice"]["heads"] == list(HEADS)
            full = full[list(HEADS)][:, ROWS[0]:ROWS[1]]
        else:
            assert "slice" not in entry.meta
        np.testing.assert_array_equal(values, full, err_msg=str(key))


def test_a_partial_capture_in_parts_is_the_same(captures: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap, "PART_BYTES", 16)  # every matrix handed over a row at a time
    parted = directory.open_capture(_trace(tmp_path / "p", "--positions", "4..9", "--heads", "1,3"))
    part = directory.open_capture(captures["part_pv"])
    for key in ("attn_scores", "attn_softmax"):
        for layer in range(4):
            a, b = parted.by_key()[(key, layer)], part.by_key()[(key, layer)]
            assert a.shape == b.shape
            np.testing.assert_allclose(aprt.read(a.path)[1], aprt.read(b.path)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("order", ["partial-first", "whole-first"])
def test_a_partial_capture_against_a_whole_one(captures: dict[str, Path], order: str) -> None:
    a, b = (captures["part_pv"], captures["whole_hf"]) if order == "partial-first" else \
        (captures["whole_hf"], captures["part_pv"])
    report = diff_captures(a, b)
    assert report.ok, [(r.stage, r.layer, r.reasons) for r in report.records if r.status != "pass"]
    scores = next(r for r in report.records if (r.stage, r.layer) == ("attn_scores", 1))
    assert scores.metrics is not None
    # causal: the query at position p sees p + 1 keys, whatever row of the file it is in
    assert scores.metrics.count == len(HEADS) * sum(p + 1 for p in range(*ROWS))
    assert scores.metrics.positions == tuple(range(*ROWS))
    assert len(scores.metrics.head_cosine) == len(HEADS)


def test_a_fault_is_found_at_its_true_position_and_head(captures: dict[str, Path]) -> None:
    report = diff_captures(captures["part_bad"], captures["whole_hf"])
    first = next(r for r in report.records if r.status == "fail")
    assert (first.stage, first.layer) == ("attn_softmax", 1)
    assert first.metrics is not None
    where = first.metrics.max_index
    assert where["head"] in HEADS and ROWS[0] <= where["query"] < ROWS[1]
    assert first.metrics.worst_position is not None and ROWS[0] <= first.metrics.worst_position[0] < ROWS[1]


def test_partial_captures_of_different_slices_are_refused(captures: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = _trace(tmp_path / "other", "--positions", "0..3")
    capsys.readouterr()
    assert run(["diff", str(captures["part_pv"]), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "A is a partial capture of positions 4..9, heads 1,3, B of positions 0..3, all heads" in err
    same_slice = ["diff", str(captures["part_pv"]), str(captures["part_bad"]), "--format", "json"]
    assert run(same_slice) == 1  # the same slice on both sides: compared
    data = json.loads(capsys.readouterr().out)
    failed = [(r["stage"], r["layer"]) for r in data["records"] if r["status"] == "fail"]
    assert failed[0] == ("attn_softmax", 1) and data["summary"]["error"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (("--positions", "9..4"), "--positions '9..4': expected A..B with 0 <= A < B"),
    (("--positions", "5"), "--positions '5': expected A..B"),
    (("--positions", "4..13"), "--positions 4..13 is outside the input's 12 position(s)"),
    (("--heads", "4"), "--heads 4 is outside the model's 4 attention head(s)"),
    (("--heads", "x"), "--heads 'x': expected 0 | 0,3,5 | 2..6"),
    (("--heads", "1", "--generate", "2"), "--positions and --heads cut a prefill's attention matrices"),
])
def test_a_slice_outside_the_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             args: tuple[str, ...], message: str) -> None:
    code = run(["trace", "--model", "synthetic", "--tokens", TOKENS, "--save-tensor", "all",
                "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "out").exists()
