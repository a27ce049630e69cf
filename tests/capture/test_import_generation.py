"""``pv import`` of a generation: generate.json plus one folder of dumps per step, then ``pv bisect --generate``.

The dumping engine is the independent numpy KV-cache decoder of the compare
tests. Its attention matrices are dumped over a fixed cache of 16 cells, as
llama.cpp's ``kq`` is, and cut by the mapping's ``crop_keys`` to the keys each
step sees: 8 at the prefill of 8 tokens, then ``P + 1`` at a decode step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv import stages as stage_table
from pv.cli import run
from tests.compare.numpy_decoder import PROMPT, STEPS, NumpyDecoder, oracle_generation

pytest.importorskip("torch")

CELLS = 16
LAYER = 2
MAPPING = """format: pv-mapping
version: 1
name: numpy-decoder
description: the numpy decoder of the tests, one npz per step
rules:
"""


def _mapping(tmp: Path) -> Path:
    lines = [MAPPING]
    for st in stage_table.STAGES:
        name = st.name if st.whole_model else rf"blk\.(?P<layer>\d+)\.{st.name}"
        crop = "\n    transform: [crop_keys]" if st.mask == "causal" else ""
        lines.append(f"  - match: '{name}'\n    stage: {st.name}{crop}\n")
    path = tmp / "numpy-decoder.yaml"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def model() -> Any:
    from pv.capture.model.load import load_model

    return load_model("synthetic")


@pytest.fixture(scope="module")
def reference(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return oracle_generation(model, tmp_path_factory.mktemp("gen") / "hf")


def dump(model: Any, reference: Path, root: Path, bug: str | None = None, *, cells: int | None = CELLS) -> Path:
    """One npz per step in ``root/step-N`` and a minimal generate.json (no positions).

    ``cells``: the attention matrices' width, padded with junk or cut (None: as computed)."""
    engine = NumpyDecoder(model.state_dict, model.config, bug=bug, bug_layer=LAYER)
    records = []
    for rec in json.loads((reference / "generate.json").read_text())["steps"]:
        tensors: dict[str, np.ndarray] = {}

        def keep(stage: str, layer: int | None, array: np.ndarray, tensors: dict[str, np.ndarray] = tensors) -> None:
            st = stage_table.get(stage)
            if st.mask == "causal" and cells is not None:  # over the whole cache: cells past the step hold junk
                padded = np.full((*array.shape[:-1], cells), 1e9, np.float32)
                width = min(cells, array.shape[-1])
                padded[..., :width] = array[..., :width]
                array = padded
            tensors[st.name if st.whole_model else f"blk.{layer}.{st.name}"] = np.asarray(array, np.float32)

        logits = engine.step(rec["input"], keep)
        folder = root / f"step-{rec['step']}"
        folder.mkdir(parents=True)
        np.savez(folder / "dump.npz", **tensors)
        records.append({"step": rec["step"], "input": rec["input"], "predicted": int(np.argmax(logits[-1]))})
    (root / "generate.json").write_text(json.dumps({"format": "pv-generate", "steps": records}))
    return root


def test_imported_generation_bisects_clean_against_the_oracle(model: Any, reference: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    dumps = dump(model, reference, tmp_path / "dumps")
    out = tmp_path / "imported"
    code = run(["import", str(dumps), "--mapping", str(_mapping(tmp_path)), "--model", "synthetic", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"wrote {STEPS} steps" in text
    doc = json.loads((out / "generate.json").read_text())
    assert [(s["step"], s["position"], s["dir"]) for s in doc["steps"]] == [(0, 0, "step-0"), (1, 8, "step-1"),
                                                                            (2, 9, "step-2")]
    manifest = json.loads((out / "step-1" / "manifest.json").read_text())
    (scores,) = [f for f in manifest["files"] if f["path"] == "layer-0/attn_scores.bin"]
    assert scores["shape"] == [4, 1, 9]  # cropped to the keys step 1 sees, not to its one query
    prefill = json.loads((out / "step-0" / "manifest.json").read_text())
    assert prefill["run"]["token_ids"] == PROMPT  # the prompt, as pv trace --generate records it
    code = run(["bisect", str(out), str(reference), "--generate", str(STEPS), "--model", "synthetic"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"no divergence over {STEPS} steps" in text


def test_imported_generation_names_a_decode_bug(model: Any, reference: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dumps = dump(model, reference, tmp_path / "dumps", "cache_write_off_by_one")
    out = tmp_path / "imported"
    assert run(["import", str(dumps), "--mapping", str(_mapping(tmp_path)), "-o", str(out), "--format", "json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["steps"] == STEPS and done["files"] == STEPS * 71 and done["ignored"] == []
    code = run(["bisect", str(out), str(reference), "--generate", str(STEPS), "--format", "json"])
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert code == 1
    assert summary["stage_step"] == 1 and summary["first_divergence"] == {"layer": LAYER, "stage": "attn_scores"}


def test_a_decode_row_passes_the_shape_check_of_a_single_import(model: Any, reference: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """[NH, 1, P + 1] is a documented layout: a step imported on its own is not refused for it."""
    dumps = dump(model, reference, tmp_path / "dumps", cells=None)
    plain = _mapping(tmp_path)
    plain.write_text(plain.read_text().replace("\n    transform: [crop_keys]", ""))
    out = tmp_path / "one-step"
    code = run(["import", str(dumps / "step-1"), "--mapping", str(plain), "--model", "synthetic", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert {tuple(f["shape"]) for f in manifest["files"] if f["stage"] == "attn_softmax"} == {(4, 1, 9)}


@pytest.mark.parametrize(
    ("bug", "cells", "message"),
    [
        ("new_key_dropped", None,
         "step 1: attn_scores@2: attn_scores should be [4, 1, 9] for this model, got [4, 1, 8]"),
        (None, 8, "has fewer keys than queries and the 8 cached positions"),  # a cache of 8 cells
    ],
)
def test_a_step_with_the_wrong_keys_is_refused_in_one_line(model: Any, reference: Path, tmp_path: Path, bug: Any,
                                                          cells: int | None, message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    dumps = dump(model, reference, tmp_path / "dumps", bug, cells=cells)
    mapping = _mapping(tmp_path)
    if cells is None:
        mapping.write_text(mapping.read_text().replace("\n    transform: [crop_keys]", ""))
    out = tmp_path / "imported"
    code = run(["import", str(dumps), "--mapping", str(mapping), "--model", "synthetic", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing half-imported is left


def test_a_missing_step_folder_is_one_line(model: Any, reference: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    dumps = dump(model, reference, tmp_path / "dumps")
    for child in (dumps / "step-2").iterdir():
        child.unlink()
    (dumps / "step-2").rmdir()
    code = run(["import", str(dumps), "--mapping", str(_mapping(tmp_path)), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "generate.json lists step 2, but step-2/ is missing" in err
    assert len(err.strip().splitlines()) == 1


def test_tokens_are_not_given_for_a_generation(model: Any, reference: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dumps = dump(model, reference, tmp_path / "dumps")
    code = run(["import", str(dumps), "--mapping", str(_mapping(tmp_path)), "--tokens", "1,2",
                "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "generate.json records each step's tokens" in err and len(err.strip().splitlines()) == 1
