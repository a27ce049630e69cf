"""The fast evidence reader (``pv.falsify.reading``) and the compiled schema: same verdicts,
same messages, as the careful reader, on records in pv's own layout."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests_falsify_records import make_record, make_test

from pv.falsify import reading, schema_fast, store
from pv.falsify import records as rec


def _layout(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _records() -> list[rec.EvidenceRecord]:
    odd = make_test(measured={"device": "cpu", "note": "naïve: “quoted” \\ back\\slash\ttab", "n": [1, 2.5, None]})
    return [
        make_record(),
        make_record("failed"),
        make_record("skipped", absent=True),
        make_record(key=b"ci-secret", previous="b" * 64),
        make_record(tests=(odd, make_test("error")), metrics={"x": None, "y": -0.0, "z": 1e300}),
        replace(make_record(), kind=rec.DISCHARGE, outcome=rec.DISCHARGED, tests=(),
                discharge={"by": "Ada", "reason": "proof", "artifacts": {}, "backing": ["c" * 64]}).sealed(None),
    ]


@pytest.mark.parametrize("record", _records())
def test_fast_reader_reads_what_pv_writes_as_the_careful_reader_does(record: rec.EvidenceRecord) -> None:
    raw = store.payload(record)
    fast = reading.parse(raw)
    assert fast is not None, "a record pv wrote must take the fast path"
    careful = rec.from_dict(rec.parse_json(raw, "r.json"))
    assert fast[0] == careful
    assert fast[1] == careful.content_digest() == record.digest


def _hostile(edit: str) -> str:
    data = make_record(tests=(make_test(measured={"device": "cpu", "dtype": "float32"}),)).to_dict()
    text = _layout(data)
    if edit == "repeated nested key":
        return text.replace('"dtype": "float32"', '"dtype": "float32",\n        "dtype": "float64"')
    if edit == "repeated top-level key":
        return text.replace('\n  "host": "host-a",', '\n  "host": "host-a",\n  "host": "host-b",')
    if edit == "NaN":
        return text.replace('"cosine": 0.999\n  }', '"cosine": NaN\n  }')
    if edit == "long integer":
        return text.replace('"pid": 1234', '"pid": ' + "9" * 101)
    if edit == "deep":
        return text.replace('"note": "declared"', '"note": ' + "[" * 70 + "]" * 70)
    if edit == "crowded":
        return text.replace('"note": "declared"', '"note": [' + ", ".join(["0"] * (rec.MAX_ENTRIES + 1)) + "]")
    if edit == "discharge kind on a run":
        return text.replace('"kind": "run"', '"kind": "discharge"')
    if edit == "escaped member name":
        return text.replace('"host": "host-a"', '"\\u0068ost": "host-a"')
    if edit == "missing member":
        return text.replace('\n  "host": "host-a",', "")
    if edit == "unknown member":
        return text.replace('\n  "host": "host-a",', '\n  "host": "host-a",\n  "hostname": "x",')
    raise AssertionError(edit)


@pytest.mark.parametrize("edit", ["repeated nested key", "repeated top-level key", "NaN", "long integer", "deep",
                                  "crowded", "discharge kind on a run", "escaped member name", "missing member",
                                  "unknown member"])
def test_hostile_records_in_pv_layout_go_to_the_careful_reader(tmp_path: Path, edit: str) -> None:
    text = _hostile(edit)
    assert reading.parse(text.encode()) is None
    path = tmp_path / "r.json"
    path.write_text(text)
    try:
        careful = rec.from_dict(rec.parse_json(text.encode(), store.show_path(path)))
        expected = None
    except rec.EvidenceError as exc:
        careful, expected = None, str(exc)
    if edit == "escaped member name":  # valid JSON that names a member in escapes: still the same record
        assert careful is not None and store.read_record(path) == careful
        return
    assert expected is not None
    with pytest.raises(rec.EvidenceError) as err:
        store.read_record(path)
    assert str(err.value).endswith(expected) and "\n" not in str(err.value)


def test_a_record_in_another_layout_is_read_all_the_same(tmp_path: Path) -> None:
    record = make_record()
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record.to_dict()))
    assert reading.parse(path.read_bytes()) is None
    stored = store.read_stored(path)
    assert stored.record == record and stored.content_digest is None
    assert stored.git_blob == store.blob_id(path.read_bytes())


def test_an_escaped_lone_surrogate_has_a_digest_on_both_paths(tmp_path: Path) -> None:
    """Fuzz finding: ``"\\udcff"`` in a record made its digest raise UnicodeEncodeError."""
    data = make_record().to_dict()
    data["versions"]["numpy"] = "\udcff"
    raw = _layout(data).encode()
    fast = reading.parse(raw)
    assert fast is not None
    assert fast[1] == fast[0].content_digest() != data["digest"]


def test_folder_reading_keeps_the_careful_readers_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "evidence" / "demo-v1" / "FALSIFY-DEMO-001"
    folder.mkdir(parents=True)
    good = make_record()
    (folder / "a.json").write_bytes(store.payload(good))
    os.mkfifo(folder / "b.json")
    (folder / "c.json").symlink_to(folder / "a.json")
    (folder / ".hidden.json").write_text("{")
    (folder / "d.txt").write_text("{")
    read = store.read_folder(folder)
    assert [type(x).__name__ for x in read] == ["StoredRecord", "EvidenceError", "StoredRecord"]
    assert "not a regular file" in str(read[1])
    first, third = read[0], read[2]
    assert isinstance(first, store.StoredRecord) and isinstance(third, store.StoredRecord)
    assert first.record == third.record == good and first.content_digest == good.digest
    assert store.read_folder(tmp_path / "nothing-here") == []


def test_compiled_schema_agrees_with_jsonschema_on_every_field() -> None:
    schema = rec._validator("evidence.schema.json").schema
    check = schema_fast.compile_schema(schema)
    values: list[Any] = [None, True, False, 0, 2, 2.0, -1, 1.5, "", "x", "run", "discharge", "discharged",
                         "a" * 64, "A" * 64, "a" * 64 + "\n", "2026-01-01T00:00:00Z", "x" * 300, [], [None], {},
                         {"a": 1}, {"": 1}, {"x" * 201: 1}]
    disagreements = []
    for base in _records():
        data = base.to_dict()
        for path in _paths(data):
            for value in [*values, _DELETE]:
                doc = json.loads(json.dumps(data))
                parent = doc
                for part in path[:-1]:
                    parent = parent[part]
                if value is _DELETE:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = value
                expected = not list(rec._validator("evidence.schema.json").iter_errors(doc))
                if check(doc) != expected:
                    disagreements.append((path, value))
    assert not disagreements


_DELETE = object()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def test_unsupported_keywords_are_refused_not_ignored() -> None:
    for schema in ({"format": "date"}, {"patternProperties": {"a": {}}}, {"prefixItems": [{}]},
                   {"$ref": "https://example.com/x"}, {"enum": [[1]]}):
        with pytest.raises(schema_fast.Unsupported):
            schema_fast.compile_schema(schema)


def test_schema_errors_asks_jsonschema_only_to_word_a_refusal(monkeypatch) -> None:
    data = make_record().to_dict()
    real = rec._validator
    monkeypatch.setattr(rec, "_validator", lambda name: pytest.fail("jsonschema asked about a valid record"))
    assert rec.schema_errors(data) == []
    monkeypatch.setattr(rec, "_validator", real)
    data["outcome"] = "maybe"
    assert any(p.startswith("outcome: 'maybe' is not one of") for p in rec.schema_errors(data))
    edited = replace(make_record(), host="")
    assert any(p.startswith("host:") for p in rec.schema_errors(edited.to_dict()))


def test_the_member_cache_is_bounded_in_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile records with huge members cannot make a long-running reader's memory grow: a member
    text over MAX_REMEMBERED_TEXT is read but not remembered, and the rest are held to
    MAX_REMEMBERED_CHARS in all."""
    monkeypatch.setattr(reading, "MAX_REMEMBERED_CHARS", 200_000)
    monkeypatch.setattr(reading, "MAX_REMEMBERED_TEXT", 20_000)
    monkeypatch.setattr(reading, "_remembered", {})
    monkeypatch.setattr(reading, "_shapes", {})
    monkeypatch.setattr(reading, "_held_chars", 0)
    for i in range(40):
        note = f"{i}:" + "x" * (5_000 if i % 2 else 50_000)  # every other one too long to remember
        record = make_record(tests=(make_test(measured={"device": "cpu", "note": note}),))
        parsed = reading.parse(store.payload(record))
        assert parsed is not None and parsed[1] == record.digest
        held = sum(len(k) for k in reading._remembered)
        assert held == reading._held_chars <= 200_000
        assert all(len(k) <= 20_000 for k in reading._remembered)
