"""The table of fuzzed readers: one row per file format pv reads from other people."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st

from .targets import (
    Target,
    capture_cases,
    model_config_cases,
    run_capture,
    run_model_config,
    run_tolerance,
    tolerance_cases,
)
from .targets_repo import (
    baseline_cases,
    contract_cases,
    evidence_cases,
    run_baseline,
    run_contract,
    run_evidence,
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("contract", "pv validate on a mutated contract", contract_cases, run_contract),
        Target("capture", "pv diff on mutated APRT files and manifests", capture_cases, run_capture),
        Target("tolerance", "pv diff --config on a mutated tolerance file", tolerance_cases, run_tolerance),
        Target("model_config", "model_config on a mutated config.json", model_config_cases, run_model_config),
        Target("evidence", "read_record / pv status on a mutated evidence record", evidence_cases, run_evidence),
        Target("baseline", "pv gate --baseline on a mutated status snapshot", baseline_cases, run_baseline),
    )
}


@functools.cache
def cases(name: str) -> st.SearchStrategy[Any]:
    """The case strategy of one reader, built once per process."""
    return TARGETS[name].strategy()
