"""``pv validate --fix``: statuses under keys pv does not read are renamed in place, nothing else moves."""

from __future__ import annotations

from pathlib import Path

from pv.cli import run
from pv.contract.fix import fix_file
from pv.contract.validate import validate_paths

TEXT = """\
# a comment that must survive
metadata:
  version: "1"
  description: d
  discharge_status: PARTIAL_ALGORITHM_LEVEL   # stays
falsification_tests:
  - id: F-1
    rule: r
    prediction: p
    test: t
    if_fails: f
    "status_v1_2_0": FUNCTIONAL
  - id: F-2
    rule: r
    prediction: p
    test: t
    if_fails: f
    verdict: PROPOSED
    evidence: {status: FUNCTIONAL}
  - id: F-3
    rule: r
    prediction: p
    test: t
    if_fails: f
    status: PROPOSED
    verdict: FUNCTIONAL
"""


def test_fix_renames_only_what_can_be_renamed(tmp_path: Path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(TEXT, encoding="utf-8")
    before = [f.rule for f in validate_paths([path], check_evidence=False).findings]
    assert before.count("PV025") == 3  # metadata, F-1, F-2 (F-3 has a status already)
    assert run(["validate", "--fix", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fixed: renamed 'discharge_status' to 'status'" in out
    assert "fixed: renamed 'status_v1_2_0' to 'status'" in out
    text = path.read_text(encoding="utf-8")
    assert text == (TEXT.replace("  discharge_status: PARTIAL", "  status: PARTIAL")
                    .replace('    "status_v1_2_0": FUNCTIONAL', "    status: FUNCTIONAL")
                    .replace("    verdict: PROPOSED\n", "    status: PROPOSED\n"))
    assert "PV025" not in {f.rule for f in validate_paths([path], check_evidence=False).findings}
    assert fix_file(path) == []  # idempotent


def test_fix_leaves_unreadable_files_alone(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("metadata: [\n", encoding="utf-8")
    assert fix_file(path) == [] and path.read_text(encoding="utf-8") == "metadata: [\n"


def test_pre_commit_hooks_run_pv_validate():
    import re

    import yaml

    repo = Path(__file__).resolve().parents[2]
    hooks = yaml.safe_load((repo / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    by_id = {h["id"]: h for h in hooks}
    assert by_id["pv-validate"]["entry"] == "pv validate"
    assert by_id["pv-validate-strict"]["entry"] == "pv validate --strict"
    for hook in hooks:
        assert {"id", "name", "entry", "language"} <= set(hook) and hook["language"] == "python"
        pattern = re.compile(hook["files"])
        assert pattern.search("contracts/x-v1.yaml") and pattern.search("a/contracts/b/y.yml")
        assert not pattern.search("pyproject.toml") and not pattern.search(".ci/config.yaml")


def test_fix_waits_for_the_lock_pv_falsify_holds(tmp_path: Path, capsys):
    """--fix rewrites the contract under the lock pv falsify and pv discharge take on it
    (evidence/<contract id>/.lock), so the two never interleave and lose an edit."""
    import fcntl
    import threading
    import time

    path = tmp_path / "contracts" / "c.yaml"
    path.parent.mkdir()
    path.write_text(TEXT, encoding="utf-8")
    evidence = tmp_path / "evidence"
    lock = evidence / "c" / ".lock"
    lock.parent.mkdir(parents=True)
    held = open(lock, "a+")  # noqa: SIM115 - released by the timer thread
    fcntl.flock(held, fcntl.LOCK_EX)
    threading.Timer(1.0, held.close).start()  # closing releases the lock, as a run ending does
    start = time.monotonic()
    assert run(["validate", "--fix", "--evidence", str(evidence), str(path)]) == 0
    assert time.monotonic() - start >= 0.9, "--fix rewrote the contract while another process held its lock"
    assert "fixed: renamed" in capsys.readouterr().out
    assert "discharge_status" not in path.read_text(encoding="utf-8")


def test_fix_takes_no_lock_when_there_is_nothing_to_fix(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("metadata: {version: '1', description: d}\n", encoding="utf-8")
    assert fix_file(path) == []
    assert not (tmp_path / "evidence").exists()
