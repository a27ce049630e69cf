"""Status rewrites touch the status scalars and nothing else, atomically."""

from __future__ import annotations

import difflib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pv.falsify.rewrite import METADATA, RewriteError, rewrite_statuses, rewrite_text

CORPUS = Path("/work/shared/corpus/contracts-in-the-wild")

DOC = textwrap.dedent("""\
    # header comment
    metadata:
      version: 1.0   # a float on purpose
      description: >
        folded text
    falsification_tests:
    - id: A
      rule: r   # trailing
      status: "PROPOSED"  # double quoted
    - id: B
      rule: x
    -   id: C
        rule: y
        status: proposed
    - {id: D, rule: z}
    - id: E""")


def changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.ndiff(before.splitlines(), after.splitlines()) if ln[:1] in "+-"]


def test_edits_only_status_scalars() -> None:
    out, changes = rewrite_text(DOC, {"A": "FUNCTIONAL", "B": "FALSIFIED", "C": "PARTIAL_ALGORITHM_LEVEL",
                                      "D": "FUNCTIONAL", "E": "BLOCKER_FIXTURE_ABSENT"})
    delta = changed_lines(DOC, out)
    assert sorted(ln for ln in delta if ln[0] == "-") == sorted([
        '-   status: "PROPOSED"  # double quoted',
        "-     status: proposed",
        "- - {id: D, rule: z}",
    ])
    assert sorted(ln for ln in delta if ln[0] == "+") == sorted([
        '+   status: "FUNCTIONAL"  # double quoted',
        "+   status: FALSIFIED",
        "+     status: PARTIAL_ALGORITHM_LEVEL",
        "+ - {id: D, rule: z, status: FUNCTIONAL}",
        "+   status: BLOCKER_FIXTURE_ABSENT",
    ])
    assert out.endswith("- id: E\n  status: BLOCKER_FIXTURE_ABSENT\n")
    assert [(c.falsifier_id, c.old, c.new) for c in changes][:2] == [("A", "PROPOSED", "FUNCTIONAL"),
                                                                      ("B", None, "FALSIFIED")]
    data = yaml.safe_load(out)
    assert [f["status"] for f in data["falsification_tests"]] == [
        "FUNCTIONAL", "FALSIFIED", "PARTIAL_ALGORITHM_LEVEL", "FUNCTIONAL", "BLOCKER_FIXTURE_ABSENT"]


def test_unchanged_status_is_no_edit_and_crlf_is_kept() -> None:
    crlf = DOC.replace("\n", "\r\n")
    out, changes = rewrite_text(crlf, {"A": "PROPOSED", "B": "FUNCTIONAL"})
    assert [c.falsifier_id for c in changes] == ["B"]
    assert "\n" not in out.replace("\r\n", "")
    assert out.replace("  status: FUNCTIONAL\r\n", "", 1) == crlf


def test_refusals_leave_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(DOC)
    with pytest.raises(RewriteError, match="no falsifier with id Z"):
        rewrite_statuses(path, {"Z": "FUNCTIONAL"})
    with pytest.raises(RewriteError, match="refusing to write status"):
        rewrite_statuses(path, {"A": "FUNCTIONAL\nevil: 1"})
    dup = DOC + "\n- id: A\n  rule: again\n"
    with pytest.raises(RewriteError, match="appears twice"):
        rewrite_text(dup, {"A": "FUNCTIONAL"})
    with pytest.raises(RewriteError, match="invalid YAML"):
        rewrite_text("a: [", {"A": "FUNCTIONAL"})
    assert path.read_text() == DOC


def test_keeps_permissions_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(DOC)
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    rewrite_statuses(path, {"A": "FUNCTIONAL"})
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert not [p for p in tmp_path.iterdir() if p.name != "c.yaml"]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="contracts-in-the-wild corpus not present")
def test_corpus_contracts_round_trip_byte_for_byte() -> None:
    """Real contracts: only status lines change; everything else is byte-identical."""
    done = 0
    for path in sorted(CORPUS.glob("*.yaml")):
        text = path.read_bytes().decode("utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        ids = [str(f["id"]) for f in (data or {}).get("falsification_tests") or []
               if isinstance(f, dict) and "id" in f]
        if not ids or len(set(ids)) != len(ids):
            continue
        out, _ = rewrite_text(text, {fid: "PARTIAL_ALGORITHM_LEVEL" for fid in ids}, path.name)
        after = yaml.safe_load(out)
        assert {str(f["id"]): f["status"] for f in after["falsification_tests"]} == \
            {fid: "PARTIAL_ALGORITHM_LEVEL" for fid in ids}
        for line in changed_lines(text, out):
            assert "status:" in line, (path.name, line)
        done += 1
    assert done >= 10


WRITER = """
import sys, time
import pv.files as atomic
from pv.falsify.rewrite import rewrite_statuses

# A slow disk: each flush to disk takes a while, so kills land inside writes.
real_fsync = atomic.os.fsync
def slow_fsync(fd):
    time.sleep(0.1)
    real_fsync(fd)
atomic.os.fsync = slow_fsync
path, n = sys.argv[1], 0
print("ready", flush=True)
while True:
    rewrite_statuses(path, {"A": "FUNCTIONAL" if n % 2 == 0 else "FALSIFIED"})
    n += 1
"""


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path) -> None:
    """SIGKILL a process rewriting a large contract at random moments: never a torn file."""
    padding = "".join(f"# padding line {i} " + "x" * 100 + "\n" for i in range(300))  # ~35 KB
    base = padding + DOC + "\n"
    variants = {rewrite_text(base, {"A": s})[0] for s in ("FUNCTIONAL", "FALSIFIED")} | {base}
    path = tmp_path / "big.yaml"
    torn_writes = 0
    for attempt in range(8):
        path.write_text(base)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.1 + 0.037 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert path.read_text() in variants, f"torn file after kill #{attempt}"
        leftovers = [p for p in tmp_path.iterdir() if p != path]
        # A killed writer may leave its hidden temp file behind, never a half-written contract.
        assert all(p.name.startswith(".big.yaml.") and p.name.endswith(".tmp") for p in leftovers)
        torn_writes += bool(leftovers)
        for p in leftovers:
            p.unlink()
    assert torn_writes > 0, "no kill landed inside a write: the test proved nothing"


def test_metadata_status_is_edited_in_place() -> None:
    doc = DOC.replace("  version: 1.0   # a float on purpose\n",
                      "  version: 1.0   # a float on purpose\n  status: PROPOSED  # contract level\n")
    out, changes = rewrite_text(doc, {"A": "FUNCTIONAL"}, metadata_status="PARTIAL_ALGORITHM_LEVEL")
    assert sorted(changed_lines(doc, out)) == sorted([
        "-   status: PROPOSED  # contract level",
        "+   status: PARTIAL_ALGORITHM_LEVEL  # contract level",
        '-   status: "PROPOSED"  # double quoted',
        '+   status: "FUNCTIONAL"  # double quoted',
    ])
    assert [c.falsifier_id for c in changes] == [METADATA, "A"]
    with pytest.raises(RewriteError, match="metadata has no status"):
        rewrite_text(DOC, {}, metadata_status="FUNCTIONAL")


def test_hostile_yaml_is_refused_before_any_rewrite(tmp_path) -> None:
    """A recursive alias (or an alias bomb) is refused by pv's loader, not walked until Python gives up."""
    from pv.falsify.rewrite import RewriteError, rewrite_statuses

    path = tmp_path / "c.yaml"
    text = ("metadata: &m\n  version: '1'\n  description: x\n  extra: *m\n"
            "falsification_tests:\n  - id: FALSIFY-A-001\n    rule: r\n    prediction: p\n"
            "    test: t.py::t\n    if_fails: f\n    status: PROPOSED\n")
    path.write_text(text)
    with pytest.raises(RewriteError, match="refusing to rewrite") as err:
        rewrite_statuses(path, {"FALSIFY-A-001": "FUNCTIONAL"})
    assert "\n" not in str(err.value) and path.read_text() == text
