"""Building valid evidence records for tests (not a test module)."""

from __future__ import annotations

from typing import Any

from pv.falsify.evidence import EvidenceRecord, TestResult


def make_record(outcome: str = "passed", *, live: bool = False, absent: bool = False,
                finished: str = "2026-11-25T12:00:00.000000Z", contract: str = "demo-v1",
                falsifier: str = "FALSIFY-DEMO-001", hashes: dict[str, Any] | None = None,
                **overrides: Any) -> EvidenceRecord:
    reason = None if outcome == "passed" else ("fixture absent: no GPU" if absent else "boom")
    test = TestResult("falsifiers/test_demo.py::test_one", outcome, reason, absent, 0.25,
                      {"device": "cuda" if live else "cpu"}, {"cosine": 0.999}, live)
    fields: dict[str, Any] = {
        "contract_id": contract, "contract_version": "1.0.0", "falsifier_id": falsifier,
        "outcome": outcome, "reason": reason, "fixture_absent": absent, "live": live,
        "live_requirements": {"device": "cuda"}, "facts": dict(test.facts),
        "metrics": {"cosine": 0.999}, "tests": (test,), "started_at": "2026-11-25T11:59:59.000000Z",
        "finished_at": finished, "duration_s": 0.25, "host": "host-a", "pid": 1234,
        "versions": {"python": "3.11.0", "pv": "0.1.0", "torch": None},
        "git": {"commit": "a" * 40, "dirty": False}, "file_hashes": hashes or {},
        "promotion": {"old": "PROPOSED", "new": "FUNCTIONAL", "applied": True},
    }
    fields.update(overrides)
    return EvidenceRecord(**fields)
