"""Evidence records: round trip, schema, digest, signature, chain, legacy format, hostile files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tests_falsify_records import make_record

from pv.falsify import records as rec
from pv.falsify import store


def test_round_trip_and_digest() -> None:
    r = make_record("skipped", absent=True)
    again = rec.from_dict(json.loads(r.to_json()))
    assert again == r
    assert r.digest == r.content_digest() and json.loads(r.to_json())["pv_evidence"] == 2
    edited = replace(r, outcome="passed")
    assert edited.content_digest() != r.digest


def test_hmac_signature_verifies_only_with_its_key() -> None:
    r = make_record(key=b"ci-secret")
    assert r.signature is not None and r.signature["alg"] == "hmac-sha256"
    assert rec.signature_ok(r, b"ci-secret") is True
    assert rec.signature_ok(r, b"laptop") is None          # another key: not verifiable, not valid
    forged = replace(r, outcome="failed").sealed(None)      # recomputed digest, no key
    assert rec.signature_ok(forged, b"ci-secret") is None
    resigned = replace(r, digest=replace(r, outcome="failed").content_digest())
    assert rec.signature_ok(resigned, b"ci-secret") is False


@pytest.mark.parametrize(("path", "value", "where"), [
    (("outcome",), "maybe", "outcome"),
    (("pv_evidence",), 3, "pv_evidence"),
    (("git", "commit"), "not-a-sha", "git/commit"),
    (("falsifier_id",), "../escape", "falsifier_id"),
    (("promotion", "new"), "GREAT", "promotion/new"),
    (("finished_at",), "yesterday", "finished_at"),
    (("tests",), [], "tests"),
    (("subjects",), {"a.py": "xyz"}, "subjects/a.py"),
    (("previous",), "abc", "previous"),
])
def test_schema_rejects(path, value, where) -> None:
    data = make_record().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = rec.schema_errors(data)
    assert problems and any(p.startswith(where) or where in p for p in problems), problems


def test_schema_rejects_unknown_and_missing_fields() -> None:
    data = make_record().to_dict()
    data["live"] = True  # the stored verdict of format 1 is gone
    assert any("live" in p for p in rec.schema_errors(data))
    del data["live"], data["digest"]
    assert any("digest" in p for p in rec.schema_errors(data))


def test_format_1_records_read_as_declared_facts(tmp_path: Path) -> None:
    legacy = sorted((Path(__file__).parents[2] / "evidence" / "trace-attn-sub-stages-v1"
                     / "FALSIFY-ATTN-SUB-003").glob("*.json"))
    old = [p for p in legacy if json.loads(p.read_text()).get("pv_evidence") == 1]
    assert old, "the repository keeps its format-1 records"
    records = [store.read_record(p) for p in old]
    assert all(r.legacy and all(not t.measured for t in r.tests) for r in records)
    assert any(t.declared.get("weights") == "real" for r in records for t in r.tests)


def test_write_names_the_record_and_never_overwrites(tmp_path: Path) -> None:
    r = make_record()
    p1 = store.write_record(tmp_path, r)
    p2 = store.write_record(tmp_path, r)
    assert p1 != p2 and p1.parent == tmp_path / "demo-v1" / "FALSIFY-DEMO-001"
    assert store.read_record(p1) == r
    with pytest.raises(rec.EvidenceError, match="digest does not match"):
        store.write_record(tmp_path, replace(r, outcome="failed"))


def test_concurrent_writers_all_land_intact(tmp_path: Path) -> None:
    r = make_record()
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(store.write_record(tmp_path, r))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 16 and all(store.read_record(p) == r for p in paths)


def test_chain_order_follows_previous_links(tmp_path: Path) -> None:
    first = store.write_record(tmp_path, make_record(finished="2026-11-25T12:00:02.000000Z"))
    h1 = hashlib.sha256(first.read_bytes()).hexdigest()
    # A later record with an *earlier* timestamp: order comes from the chain, not the clock.
    second = store.write_record(tmp_path, make_record(finished="2026-11-25T12:00:01.000000Z", previous=h1))
    stored = store.load_stored(tmp_path, "demo-v1", "FALSIFY-DEMO-001")
    assert [s.path for s in stored] == [first, second]
    assert store.head(stored) == hashlib.sha256(second.read_bytes()).hexdigest()


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000 + "]" * 100_000, "nested more than 64 deep"),
    ('{"a": ' + "[" * 70 + "]" * 70 + "}", "nested more than 64 deep"),
    ('{"pv_evidence": ' + "9" * 5000 + "}", "invalid JSON: integer literal of 5000 digits"),
    ('{"duration_s": NaN}', "not valid JSON (NaN or Infinity)"),
    ("{", "invalid JSON"),
    ("\xff\xfe", "not UTF-8"),
    ("[1, 2]", "must be a JSON object"),
    ('{"pv_evidence": 2}', "does not follow the schema"),
])
def test_hostile_record_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "r.json"
    p.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(rec.EvidenceError) as err:
        store.read_record(p)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_fifo_and_oversize_records_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(rec.EvidenceError, match="not a regular file"):
        store.read_record(fifo)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (rec.MAX_RECORD_BYTES + 1))
    with pytest.raises(rec.EvidenceError, match="larger than"):
        store.read_record(big)


def test_subject_hashes_stay_inside_the_repository(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    os.mkfifo(tmp_path / "pipe.py")
    got = rec.hash_files(tmp_path, ["a.py", "/proc/self/mem", "../outside.py", "pipe.py", "missing.py"])
    assert got["a.py"] == hashlib.sha256(b"x = 1\n").hexdigest()
    assert got["/proc/self/mem"] is None and got["../outside.py"] is None
    assert got["pipe.py"] is None and got["missing.py"] is None


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "x" * 129, "nul\x00", "-leading", "sp ace"])
def test_ids_that_cannot_name_a_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(rec.EvidenceError, match="cannot name an evidence folder"):
        store.record_dir(tmp_path, "demo-v1", bad)


def test_versions_do_not_import_torch() -> None:
    code = "import sys; from pv.falsify.records import versions; v = versions(); " \
           "assert 'torch' in v and 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schema_messages_stay_on_one_line_and_crowded_records_are_refused_early(tmp_path: Path) -> None:
    """Fuzz findings: a key with a line break echoed by the schema; thousands of entries to validate."""
    data = make_record().to_dict()
    data["versions"] = {"a\nb": 1}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(data))
    with pytest.raises(rec.EvidenceError) as err:
        store.read_record(p)
    assert "\n" not in str(err.value) and "versions/a b" in str(err.value)
    data = make_record().to_dict()
    data["tests"] = [{"x": i} for i in range(rec.MAX_ENTRIES + 1)]
    p.write_text(json.dumps(data))
    with pytest.raises(rec.EvidenceError, match="entries, over the bound"):
        store.read_record(p)
