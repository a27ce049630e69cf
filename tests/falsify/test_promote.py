"""Promotion rules, aggregation of several tests, and the reverse question the gate asks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests_falsify_records import make_record

from pv.falsify.evidence import TestResult
from pv.falsify.promote import RunSummary, backing, meets, promote, summarize, supports

P, F, S = "passed", "failed", "skipped"
LIVE_PASS = RunSummary(P, None, False, True)
ALGO_PASS = RunSummary(P, None, False, False)
FAIL = RunSummary(F, "boom", False, False)
ABSENT = RunSummary(S, "fixture absent: no GPU", True, False)
OTHER_SKIP = RunSummary(S, "not today", False, False)


@pytest.mark.parametrize(("old", "run", "new"), [
    ("PROPOSED", LIVE_PASS, "FUNCTIONAL"),
    (None, LIVE_PASS, "FUNCTIONAL"),
    ("PARTIAL_ALGORITHM_LEVEL", LIVE_PASS, "FUNCTIONAL"),
    ("FALSIFIED", LIVE_PASS, "FUNCTIONAL"),
    ("DISCHARGED", LIVE_PASS, "DISCHARGED"),
    ("PROPOSED", ALGO_PASS, "PARTIAL_ALGORITHM_LEVEL"),
    ("BLOCKER_FIXTURE_ABSENT", ALGO_PASS, "PARTIAL_ALGORITHM_LEVEL"),
    ("FALSIFIED", ALGO_PASS, "PARTIAL_ALGORITHM_LEVEL"),
    ("FUNCTIONAL", ALGO_PASS, "FUNCTIONAL"),           # never demoted by an algorithm-level pass
    ("functional", ALGO_PASS, "FUNCTIONAL"),           # spellings normalise
    ("DISCHARGED", ALGO_PASS, "DISCHARGED"),
    ("PROPOSED", FAIL, "FALSIFIED"),
    ("FUNCTIONAL", FAIL, "FALSIFIED"),
    ("DISCHARGED", FAIL, "FALSIFIED"),
    ("PROPOSED", ABSENT, "BLOCKER_FIXTURE_ABSENT"),
    ("not-a-status", ABSENT, "BLOCKER_FIXTURE_ABSENT"),  # unknown counts as PROPOSED
    ("BLOCKER_UPSTREAM_MISSING", ABSENT, "BLOCKER_UPSTREAM_MISSING"),
    ("PARTIAL_ALGORITHM_LEVEL", ABSENT, "PARTIAL_ALGORITHM_LEVEL"),
    ("FUNCTIONAL", ABSENT, "FUNCTIONAL"),
    ("FALSIFIED", ABSENT, "FALSIFIED"),                # a skip does not clear a refutation
    ("PROPOSED", OTHER_SKIP, "PROPOSED"),
    ("PARTIAL_ALGORITHM_LEVEL", OTHER_SKIP, "PARTIAL_ALGORITHM_LEVEL"),
])
def test_promotion_rules(old, run, new) -> None:
    assert promote(old, run) == new


def t(outcome: str, live: bool = False, absent: bool = False, reason: str | None = None) -> TestResult:
    return TestResult(f"t.py::{outcome}{live}{absent}", outcome, reason, absent, 0.1, {}, {}, live)


def test_aggregation_any_failure_falsifies() -> None:
    run = summarize([t(P, live=True), t(F, reason="wrong stage"), t(S, absent=True)])
    assert run == RunSummary(F, "wrong stage", False, False)


def test_aggregation_best_pass_sets_the_level() -> None:
    assert summarize([t(P), t(S, absent=True, reason="no GPU")]) == RunSummary(P, None, False, False)
    assert summarize([t(P), t(P, live=True)]).live is True


def test_aggregation_skips() -> None:
    assert summarize([t(S, reason="x"), t(S, absent=True, reason="no GPU")]) == RunSummary(S, "no GPU", True, False)
    assert summarize([t(S, reason="x")]) == RunSummary(S, "x", False, False)
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize(("facts", "reqs", "ok"), [
    ({"device": "cuda:0", "weights": "real"}, {"device": "cuda", "weights": "real"}, True),
    ({"device": "CUDA"}, {"device": "cuda"}, True),
    ({"device": "cudax"}, {"device": "cuda"}, False),
    ({"device": "cpu", "weights": "real"}, {"device": "cuda", "weights": "real"}, False),
    ({"weights": "real"}, {"device": "cuda"}, False),
    ({}, {}, True),
    ({}, None, True),
    ({"dtype": "bfloat16"}, {"dtype": ["float16", "bfloat16"]}, True),
    ({"layers": 30}, {"layers": 30}, True),
    ({"flag": 1}, {"flag": True}, False),
])
def test_meets(facts, reqs, ok) -> None:
    assert meets(facts, reqs) is ok


def test_supports_and_backing() -> None:
    algo = make_record("passed", live=False, finished="2026-01-01T00:00:00.000000Z")
    live = make_record("passed", live=True, finished="2026-01-02T00:00:00.000000Z")
    fail = make_record("failed", finished="2026-01-03T00:00:00.000000Z")
    skip = make_record("skipped", absent=True, finished="2026-01-04T00:00:00.000000Z")
    assert supports("FUNCTIONAL", [algo, live]) == (True, "")
    assert supports("FUNCTIONAL", [algo])[0] is False
    assert supports("FUNCTIONAL", [])[1] == "FUNCTIONAL but no passing live record"
    assert supports("DISCHARGED", [algo])[0] is False
    assert supports("PARTIAL_ALGORITHM_LEVEL", [algo]) == (True, "")
    assert supports("PARTIAL_ALGORITHM_LEVEL", [])[0] is False
    # A later failure voids earlier passes.
    ok, why = supports("FUNCTIONAL", [live, fail])
    assert not ok and "after the latest failing record" in why
    assert supports("PARTIAL_ALGORITHM_LEVEL", [live, fail, algo])[0] is True
    for low in ("PROPOSED", "FALSIFIED", "BLOCKER_FIXTURE_ABSENT", None):
        assert supports(low, [])[0] is True
    assert backing("FUNCTIONAL", [algo, live, fail, skip]) is live
    assert backing("PARTIAL_ALGORITHM_LEVEL", [algo, live, skip]) is live
    assert backing("FALSIFIED", [algo, fail, skip]) is fail
    assert backing("BLOCKER_FIXTURE_ABSENT", [algo, skip]) is skip
    assert backing("FUNCTIONAL", [algo]) is None
    assert replace(algo, live=True).live
