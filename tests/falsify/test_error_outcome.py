"""A test that errors is not a refutation: the ``error`` outcome in records and in the judge."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests_falsify_records import claim, make_record, make_test

from pv.falsify import judge
from pv.falsify.records import from_dict, schema_errors
from pv.falsify.store import StoredRecord

CUDA = {"device": "cuda:0", "dtype": "float32", "weights": "real"}


def stored(record, name: str = "r") -> StoredRecord:
    return StoredRecord(record, Path(f"{name}.json"), hashlib.sha256(record.to_json().encode()).hexdigest())


def errored_record(**kw):
    return make_record("error", tests=(make_test("error", nodeid="falsifiers/test_demo.py::test_one"),), **kw)


def test_the_schema_accepts_an_error_record() -> None:
    data = errored_record().to_dict()
    assert schema_errors(data) == []
    assert from_dict(data).outcome == "error"
    assert schema_errors({**data, "outcome": "crashed"}) != []


def test_an_errored_record_reaches_nothing_and_is_no_failure() -> None:
    r = judge.reach(stored(errored_record()), claim({}))
    assert r.level is None and not r.failed
    assert r.why == "falsifiers/test_demo.py::test_one errored: boom"


def test_an_error_does_not_void_earlier_passes() -> None:
    live = make_record(measured=CUDA, cuda=True)
    broken = errored_record(finished="2026-11-25T12:00:05.000000Z")
    s = judge.support(claim({"device": "cuda"}), [stored(live, "a"), stored(broken, "b")])
    assert s.level == "FUNCTIONAL" and not s.failed_later
    assert s.allows("FUNCTIONAL")


@pytest.mark.parametrize("old", ["PROPOSED", "FUNCTIONAL", "FALSIFIED", "BLOCKER_FIXTURE_ABSENT", None])
def test_new_status_after_an_error_stays_and_says_why(old) -> None:
    c = claim({})
    run = stored(errored_record())
    new, why = judge.new_status(old, run, judge.support(c, [run]), c)
    assert new == judge.canonical(old)
    assert why == "falsifiers/test_demo.py::test_one errored: boom"


def test_a_failure_still_beats_an_error_in_the_same_record() -> None:
    tests = (make_test("error", nodeid="falsifiers/test_demo.py::test_one"),
             make_test("failed", nodeid="falsifiers/test_demo.py::test_one[b]"))
    run = stored(make_record("failed", tests=tests))
    c = claim({})
    assert judge.reach(run, c).failed
    assert judge.new_status("FUNCTIONAL", run, judge.support(c, [run]), c)[0] == "FALSIFIED"
