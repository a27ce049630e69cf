"""Building valid, sealed evidence records for tests (not a test module)."""

from __future__ import annotations

from typing import Any

from pv.contract.model import Falsifier
from pv.falsify.records import EvidenceRecord, TestResult

NODE = "falsifiers/test_demo.py::test_one"


def make_test(outcome: str = "passed", *, measured: dict[str, Any] | None = None, nodeid: str = NODE,
              absent: bool = False, cuda: bool = False) -> TestResult:
    reason = None if outcome == "passed" else ("fixture absent: no GPU" if absent else "boom")
    env = {"python": "3.11.0", "torch": "2.13.0", "cuda_available": cuda, "cuda_devices": 1 if cuda else 0}
    return TestResult(nodeid, outcome, reason, absent, 0.25,
                      measured if measured is not None else {"device": "cpu", "dtype": "float32"},
                      {"note": "declared"}, {"cosine": 0.999}, env)


def make_record(outcome: str = "passed", *, measured: dict[str, Any] | None = None, absent: bool = False,
                finished: str = "2026-11-25T12:00:00.000000Z", contract: str = "demo-v1",
                falsifier: str = "FALSIFY-DEMO-001", subjects: dict[str, Any] | None = None,
                tests: tuple[TestResult, ...] | None = None, previous: str | None = None,
                dirty: list[str] | None = None, key: bytes | None = None, cuda: bool = False,
                **overrides: Any) -> EvidenceRecord:
    if tests is None:
        tests = (make_test(outcome, measured=measured, absent=absent, cuda=cuda),)
    fields: dict[str, Any] = {
        "contract_id": contract, "contract_version": "1.0.0", "falsifier_id": falsifier,
        "outcome": outcome, "reason": tests[0].reason, "fixture_absent": absent, "tests": tests,
        "metrics": {"cosine": 0.999}, "started_at": "2026-11-25T11:59:59.000000Z",
        "finished_at": finished, "duration_s": 0.25, "host": "host-a", "pid": 1234,
        "versions": {"python": "3.11.0", "pv": "0.1.0", "torch": None},
        "git": {"commit": "a" * 40, "dirty": dirty if dirty is not None else []},
        "subjects": subjects or {}, "claim": {"tests": [NODE], "live_requirements": {"device": "cuda"}},
        "promotion": {"old": "PROPOSED", "new": "FUNCTIONAL", "applied": True, "why": None},
        "previous": previous,
    }
    fields.update(overrides)
    return EvidenceRecord(**fields).sealed(key)


def claim(reqs: dict[str, Any] | None = None, *, tests: tuple[str, ...] = (NODE,), fid: str = "FALSIFY-DEMO-001",
          matrix: tuple[dict[str, Any], ...] = ()) -> Falsifier:
    return Falsifier(fid, "PROPOSED", reqs if reqs is not None else {"device": "cuda"}, tests=tests,
                     claim_digest="0" * 64, discharge_matrix=matrix)
