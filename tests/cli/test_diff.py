"""``pv diff``: exit codes 0/1/2, table and JSON output, flags, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter
from pv.cli import run

S = 4


def capture_dir(
    root: Path, scale: float = 1.0, *, manifest: bool = True, extra: bool = False
) -> Path:
    rng = np.random.default_rng(3)
    tensors = {
        ("attn_norm", 0): rng.standard_normal((S, 64)),
        ("attn_scores", 0): np.tril(rng.standard_normal((4, S, S))),
        ("ffn_up", 1): rng.standard_normal((S, 160)),
    }
    tensors[("attn_scores", 0)] *= scale
    if extra:
        tensors[("ffn_gate", 1)] = rng.standard_normal((S, 160))
    root.mkdir(parents=True)
    if manifest:
        with CaptureWriter(root, {"dtype": "float32"}) as w:
            for (stage, layer), arr in tensors.items():
                w.write(stage, layer, arr.astype(np.float32), dtype_captured="float32")
    else:
        from pv import stages

        for (stage, layer), arr in tensors.items():
            p = root / directory.relpath_for(stage, layer)
            p.parent.mkdir(parents=True, exist_ok=True)
            aprt.write(p, stages.get(stage).header_layer(layer), arr)
    return root


def test_identical_exit_0_with_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a"), capture_dir(tmp_path / "b")
    assert run(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "L0.attn_scores" in out and "3 pairs compared: 3 within tolerance" in out


def test_scale_error_exit_1_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a", scale=0.25), capture_dir(tmp_path / "b")
    assert run(["diff", str(a), str(b), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["fail"] == 1 and data["summary"]["ok"] is False
    scores = next(r for r in data["records"] if r["stage"] == "attn_scores")
    assert scores["status"] == "fail" and scores["metrics"]["cosine"] == pytest.approx(1.0)
    assert scores["metrics"]["max_index"].keys() == {"head", "query", "key"}
    assert len(scores["metrics"]["head_cosine"]) == 4


def test_tolerance_flags_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a", scale=0.997), capture_dir(tmp_path / "b")
    assert run(["diff", str(a), str(b)]) == 1
    assert run(["diff", str(a), str(b), "--rtol", "0.01"]) == 0
    cfg = tmp_path / "tol.yaml"
    cfg.write_text("stages:\n  attn_scores: {rtol: 0.01}\n", encoding="utf-8")
    assert run(["diff", str(a), str(b), "--config", str(cfg)]) == 0
    assert run(["diff", str(a), str(b), "--config", str(cfg), "--rtol", "1e-5"]) == 1
    capsys.readouterr()


def test_stage_filter_and_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a", scale=2.0), capture_dir(tmp_path / "b")
    assert run(["diff", str(a), str(b), "--stages", "ffn_up"]) == 0
    assert "1 pairs compared" in capsys.readouterr().out
    assert run(["diff", str(a), str(b), "-v"]) == 1
    assert "per-position cosine" in capsys.readouterr().out


def test_model_gives_shapes_to_bare_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = capture_dir(tmp_path / "a", manifest=False), capture_dir(tmp_path / "b", manifest=False)
    assert run(["diff", str(a), str(b), "--model", "synthetic", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    scores = next(r for r in data["records"] if r["stage"] == "attn_scores")
    assert scores["metrics"]["count"] == 4 * S * (S + 1) // 2


def test_single_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a"), capture_dir(tmp_path / "b", scale=3)
    assert (
        run(["diff", str(a / "layer-0/attn_scores.bin"), str(b / "layer-0/attn_scores.bin")]) == 1
    )
    assert run(["diff", str(a / "layer-1/ffn_up.bin"), str(b / "layer-1/ffn_up.bin")]) == 0
    capsys.readouterr()


def test_one_sided_stage_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = capture_dir(tmp_path / "a", extra=True), capture_dir(tmp_path / "b")
    assert run(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "L1.ffn_gate" in out and "A only" in out


def test_shape_mismatch_is_a_finding_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = capture_dir(tmp_path / "a"), capture_dir(tmp_path / "b")
    aprt.write(b / "layer-1/ffn_up.bin", 1, np.zeros(7, np.float32))
    (b / "manifest.json").unlink()
    assert run(["diff", str(a), str(b)]) == 1
    captured = capsys.readouterr()
    assert "element counts differ" in captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["{a}", "{missing}"], "no such file or directory"),
        (["{a}", "{a}/layer-1/ffn_up.bin"], "cannot compare a directory"),
        (["{a}", "{empty}"], "no stage pairs matched"),
        (["{a}", "{a}", "--stages", "nonsense"], "unknown stage 'nonsense'"),
        (["{a}", "{a}", "--config", "{missing}"], "cannot read tolerance config"),
        (["{a}", "{a}", "--atol", "-1"], "non-negative"),
        (["{a}", "{a}", "--model", "no-such-model"], "not found"),
        (["{a}", "{a}", "--format", "xml"], "Invalid value"),
    ],
)
def test_trouble_is_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    a = capture_dir(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    paths = {"a": str(a), "missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty")}
    code = run(["diff", *(x.format(**paths) for x in args)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_corrupt_file_in_capture_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = capture_dir(tmp_path / "a"), capture_dir(tmp_path / "b")
    (b / "layer-1/ffn_up.bin").write_bytes(b"APRX" + bytes(8))
    assert run(["diff", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pv: error:") and "bad magic" in err and err.count("\n") == 1


def test_diff_imports_neither_torch_nor_matplotlib(tmp_path: Path) -> None:
    import subprocess
    import sys

    a = capture_dir(tmp_path / "a")
    code = (
        "import sys\nfrom pv.cli import run\n"
        f"rc = run(['diff', {str(a)!r}, {str(a)!r}, '--model', 'synthetic', '--format', 'json'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "0 []"
