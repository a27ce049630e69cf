"""Evidence records: JSON round trip, schema, unique atomic writes, staleness, cheap versions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tests_falsify_records import make_record

from pv.errors import PvError
from pv.falsify import evidence as ev


def test_round_trip_through_json() -> None:
    rec = make_record("skipped", absent=True)
    again = ev.EvidenceRecord.from_json(rec.to_json())
    assert again == rec
    assert json.loads(rec.to_json())["pv_evidence"] == 1


@pytest.mark.parametrize(("path", "value", "where"), [
    (("outcome",), "maybe", "outcome"),
    (("pv_evidence",), 2, "pv_evidence"),
    (("git", "commit"), "not-a-sha", "git/commit"),
    (("falsifier_id",), "../escape", "falsifier_id"),
    (("promotion", "new"), "GREAT", "promotion/new"),
    (("finished_at",), "yesterday", "finished_at"),
    (("tests",), [], "tests"),
    (("file_hashes",), {"a.py": "xyz"}, "file_hashes/a.py"),
])
def test_schema_rejects(path, value, where) -> None:
    data = make_record().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = ev.schema_errors(data)
    assert problems and any(p.startswith(where) for p in problems), problems
    with pytest.raises(ev.EvidenceError):
        ev.EvidenceRecord.from_dict(data)


def test_schema_rejects_unknown_and_missing_fields() -> None:
    data = make_record().to_dict()
    data["surprise"] = 1
    assert ev.schema_errors(data)
    data = make_record().to_dict()
    del data["host"]
    assert any("'host' is a required property" in p for p in ev.schema_errors(data))


def test_write_names_the_record_and_never_overwrites(tmp_path: Path) -> None:
    rec = make_record()
    paths = [ev.write_record(tmp_path, rec) for _ in range(20)]  # same timestamp, host, pid
    assert len(set(paths)) == 20
    assert all(p.parent == tmp_path / "demo-v1" / "FALSIFY-DEMO-001" for p in paths)
    assert paths[0].name.startswith("20261125T120000.000000Z-host-a-1234-")
    assert [r.falsifier_id for r in ev.load_records(tmp_path, "demo-v1", "FALSIFY-DEMO-001")] == ["FALSIFY-DEMO-001"] * 20
    assert not list(tmp_path.rglob(".*.tmp"))


def test_concurrent_writers_all_land_intact(tmp_path: Path) -> None:
    rec = make_record()

    def write(n: int) -> None:
        for i in range(25):
            ev.write_record(tmp_path, replace(rec, pid=n, metrics={"i": float(i)}))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    records = ev.load_records(tmp_path, "demo-v1", "FALSIFY-DEMO-001")
    assert len(records) == 100
    assert sorted((r.pid, r.metrics["i"]) for r in records) == [(n, float(i)) for n in range(4) for i in range(25)]


def test_invalid_records_are_refused_on_write_and_read(tmp_path: Path) -> None:
    with pytest.raises(ev.EvidenceError):
        ev.write_record(tmp_path, make_record(outcome="bogus"))
    assert not list(tmp_path.rglob("*.json"))
    folder = tmp_path / "demo-v1" / "FALSIFY-DEMO-001"
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(PvError, match="broken.json: not JSON"):
        ev.load_records(tmp_path, "demo-v1", "FALSIFY-DEMO-001")
    (folder / "broken.json").write_text("[]")
    with pytest.raises(PvError, match="must be a JSON object"):
        ev.load_records(tmp_path, "demo-v1", "FALSIFY-DEMO-001")
    with pytest.raises(PvError, match="cannot name an evidence folder"):
        ev.record_dir(tmp_path, "demo-v1", "..")


def test_hashes_and_staleness(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    algo = tmp_path / "src" / "algo.py"
    algo.write_text("x = 1\n")
    hashes = ev.hash_files(tmp_path, ["src/algo.py", "src/gone.py"])
    assert hashes["src/gone.py"] is None and len(hashes["src/algo.py"] or "") == 64
    rec = make_record(hashes=hashes)
    assert ev.stale_files(rec, tmp_path) == []
    algo.write_text("x = 2\n")
    assert ev.stale_files(rec, tmp_path) == ["src/algo.py"]
    (tmp_path / "src" / "gone.py").write_text("")
    assert ev.stale_files(rec, tmp_path) == ["src/algo.py", "src/gone.py"]


def test_git_state_outside_a_checkout(tmp_path: Path) -> None:
    assert ev.git_state(tmp_path) == {"commit": None, "dirty": None}


def test_git_state_in_a_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    state = ev.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "f.txt").write_text("b")
    assert ev.git_state(tmp_path)["dirty"] is True


def test_versions_do_not_import_torch() -> None:
    code = ("import sys; from pv.falsify.evidence import versions; v = versions(); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "print(v['python'], v['torch'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].count(".") == 2
