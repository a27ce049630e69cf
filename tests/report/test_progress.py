"""Progress lines: rewritten in place on a terminal, one line at each end elsewhere."""

from __future__ import annotations

import io

import pytest

from pv.report.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stream_gets_start_and_end_lines_only():
    out = io.StringIO()
    with Progress("capturing", out) as p:
        for i in range(500):
            p.step("attn_scores", i)
    lines = out.getvalue().splitlines()
    assert lines[0] == "capturing ..." and len(lines) == 2
    assert lines[1].startswith("capturing: done, 500 files in ")


def test_terminal_line_is_rewritten():
    out = _Tty()
    with Progress("capturing", out, interval=0.0) as p:
        p.step("embedding", None)
        p.step("attn_norm", 3)
    text = out.getvalue()
    assert "\rcapturing: 2 files, last attn_norm layer 3\x1b[K" in text
    assert text.endswith("capturing: done, 2 files in 0.0 s\x1b[K\n")


def test_a_failure_says_stopped_and_propagates():
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("running", out, unit="tests") as p:
        p.step()
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("running: stopped, 1 tests in ")


def test_bisect_model_reports_progress_on_stderr_only(capsys, tmp_path):
    import json

    from pv.cli import run

    pytest.importorskip("torch")
    assert run(["bisect", "--model", "synthetic", "--format", "json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout is still one JSON document
    assert "pv bisect: comparing pv with hf while they run: done, 71 stages in " in captured.err
    assert run(["bisect", "--model", "synthetic", "--format", "json", "--keep", str(tmp_path / "keep")]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert "pv bisect: capturing the reference (hf): done, " in captured.err
    assert "pv bisect: capturing the engine under test (pv): done, " in captured.err
