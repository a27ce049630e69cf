"""What a record proves and how far a falsifier's evidence reaches: pure functions."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from tests_falsify_records import NODE, claim, make_record, make_test

from pv.falsify import judge
from pv.falsify.store import StoredRecord

CUDA = {"device": "cuda:0", "dtype": "float32", "weights": "real"}


def stored(record, name: str = "r") -> StoredRecord:
    return StoredRecord(record, Path(f"{name}.json"), hashlib.sha256(record.to_json().encode()).hexdigest())


def chain(*records) -> list[StoredRecord]:
    return [stored(r, f"r{i}") for i, r in enumerate(records)]


@pytest.mark.parametrize(("record", "reqs", "level", "why"), [
    (make_record(measured=CUDA, cuda=True), {"device": "cuda"}, "FUNCTIONAL", ""),
    (make_record(measured=CUDA, cuda=True), {"device": "cuda", "weights": "real"}, "FUNCTIONAL", ""),
    (make_record(), {"device": "cuda"}, "PARTIAL_ALGORITHM_LEVEL", "device=cuda (measured: cpu)"),
    (make_record(), {}, "FUNCTIONAL", ""),
    # A CUDA device measured where the environment shows none is not believed.
    (make_record(measured=CUDA, cuda=False), {"device": "cuda"}, "PARTIAL_ALGORITHM_LEVEL", "no CUDA device"),
    # Facts the test only declared never count.
    (make_record(measured={}), {"device": "cuda"}, "PARTIAL_ALGORITHM_LEVEL", "not measured"),
    (make_record(measured=CUDA, cuda=True), {"colour": "blue"}, "PARTIAL_ALGORITHM_LEVEL", "not a measurable"),
    # Several observed devices: every one must meet the requirement.
    (make_record(measured={"device": ["cpu", "cuda:0"]}, cuda=True), {"device": "cuda"},
     "PARTIAL_ALGORITHM_LEVEL", "measured: ['cpu', 'cuda:0']"),
    (make_record(measured=CUDA, cuda=True, dirty=["src/algo.py"]), {}, None, "written while src/algo.py"),
    (make_record(measured=CUDA, cuda=True, tests=(make_test(measured=CUDA, cuda=True, nodeid="x.py::other"),)),
     {}, None, "no passing test that the contract's test: names"),
    (make_record("skipped", absent=True), {}, None, "the run skipped"),
])
def test_reach(record, reqs, level, why) -> None:
    r = judge.reach(stored(record), claim(reqs))
    assert r.level == level and why in r.why and not r.failed


def test_parametrised_tests_count_under_their_name() -> None:
    t = make_test(nodeid=NODE + "[case-1]")
    assert judge.reach(stored(make_record(tests=(t,))), claim({})).level == "FUNCTIONAL"


def test_an_edited_record_reaches_nothing_but_a_failure_always_counts() -> None:
    live = make_record(measured=CUDA, cuda=True)
    edited = replace(live, metrics={"cosine": 1.0})  # digest no longer matches
    r = judge.reach(stored(edited), claim({}))
    assert r.level is None and "does not match its digest" in r.why
    failed = replace(make_record("failed"), digest="0" * 64)
    assert judge.reach(stored(failed), claim({})).failed


def test_signatures_when_required() -> None:
    signed, unsigned = make_record(key=b"k"), make_record()
    assert judge.reach(stored(signed), claim({}), key=b"k", require_signed=True).level == "FUNCTIONAL"
    r = judge.reach(stored(unsigned), claim({}), key=b"k", require_signed=True)
    assert r.level is None and "not signed" in r.why
    wrong = replace(signed, signature={**signed.signature, "value": "f" * 64})
    assert "signature does not verify" in judge.reach(stored(wrong), claim({}), key=b"k").why


def test_support_is_recomputed_against_the_current_requirements() -> None:
    algo = make_record(finished="2026-11-25T12:00:00.000000Z")
    live = make_record(measured=CUDA, cuda=True, finished="2026-11-25T12:00:01.000000Z")
    records = chain(algo, live)
    assert judge.support(claim({"device": "cuda"}), records).level == "FUNCTIONAL"
    # The requirements tightened after the records were made: the same records now reach less.
    tighter = judge.support(claim({"device": "cuda", "dtype": "bfloat16"}), records)
    assert tighter.level == "PARTIAL_ALGORITHM_LEVEL" and "dtype=bfloat16" in tighter.why


def test_a_later_failure_voids_earlier_passes() -> None:
    live = make_record(measured=CUDA, cuda=True)
    fail = make_record("failed", finished="2026-11-25T12:00:05.000000Z")
    s = judge.support(claim({}), chain(live, fail))
    assert s.level is None and s.failed_later and not s.allows("PARTIAL_ALGORITHM_LEVEL")
    # Only FALSIFIED stands on a refutation: PROPOSED or a blocker set by hand would hide it.
    assert s.allows("FALSIFIED") and not s.allows("PROPOSED") and not s.allows("BLOCKER_FIXTURE_ABSENT")
    after = judge.support(claim({}), chain(live, fail, make_record("skipped", absent=True,
                                                                   finished="2026-11-25T12:00:09.000000Z")))
    assert after.allows("FALSIFIED") and not after.allows("PROPOSED")


def test_legacy_records_back_nothing() -> None:
    legacy = replace(make_record(measured=CUDA, cuda=True), pv_evidence=1, digest=None)
    s = judge.support(claim({}), chain(legacy))
    assert s.level is None and "format-1" in s.why


@pytest.mark.parametrize(("old", "record", "new"), [
    ("PROPOSED", make_record(measured=CUDA, cuda=True), "FUNCTIONAL"),
    ("PROPOSED", make_record(), "PARTIAL_ALGORITHM_LEVEL"),
    ("FALSIFIED", make_record(), "PARTIAL_ALGORITHM_LEVEL"),
    ("FUNCTIONAL", make_record("failed"), "FALSIFIED"),
    ("DISCHARGED", make_record("failed"), "FALSIFIED"),
    ("PROPOSED", make_record("skipped", absent=True), "BLOCKER_FIXTURE_ABSENT"),
    ("FALSIFIED", make_record("skipped", absent=True), "FALSIFIED"),
    ("PARTIAL_ALGORITHM_LEVEL", make_record("skipped", absent=True), "PARTIAL_ALGORITHM_LEVEL"),
    ("PROPOSED", make_record(measured=CUDA, cuda=True, dirty=["a.py"]), "PROPOSED"),
])
def test_new_status_after_one_run(old, record, new) -> None:
    c = claim({"device": "cuda"})
    run = stored(record)
    assert judge.new_status(old, run, judge.support(c, [run]), c)[0] == new


def test_an_algorithm_pass_never_demotes_a_supported_functional() -> None:
    c = claim({"device": "cuda"})
    records = chain(make_record(measured=CUDA, cuda=True), make_record(finished="2026-11-25T12:00:09.000000Z"))
    assert judge.new_status("FUNCTIONAL", records[-1], judge.support(c, records), c)[0] == "FUNCTIONAL"
    # ... but one that nothing supports any more (format-1 records only) falls to what is proven.
    legacy = replace(make_record(measured=CUDA, cuda=True), pv_evidence=1, digest=None)
    records = chain(legacy, make_record(finished="2026-11-25T12:00:09.000000Z"))
    assert judge.new_status("FUNCTIONAL", records[-1], judge.support(c, records), c)[0] == "PARTIAL_ALGORITHM_LEVEL"


def test_discharge_needs_every_matrix_target() -> None:
    bf16 = {**CUDA, "dtype": "bfloat16"}
    c = claim({"device": "cuda"}, matrix=({"dtype": "float32"}, {"dtype": "bfloat16"}))
    only_f32 = chain(make_record(measured=CUDA, cuda=True))
    backing, missing = judge.discharge_plan(c, only_f32)
    assert len(backing) == 1 and missing == [{"device": "cuda", "dtype": "bfloat16"}]
    both = chain(make_record(measured=CUDA, cuda=True), make_record(measured=bf16, cuda=True,
                                                                    finished="2026-11-25T12:00:03.000000Z"))
    backing, missing = judge.discharge_plan(c, both)
    assert len(backing) == 2 and missing == []
    # A FUNCTIONAL status with no discharge record does not support DISCHARGED.
    assert not judge.support(c, both).allows("DISCHARGED")
