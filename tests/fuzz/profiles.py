"""Hypothesis budgets for the fuzz tests: small and quick in the normal run, fixed under CI.

``pv-fuzz`` keeps the whole folder well under a minute on two cores;
``pv-fuzz-ci`` (chosen when ``CI=true``) draws the same cases on every run
(``derandomize``) and keeps no example database, so CI never flakes on a case
a previous run happened to find. ``PV_FUZZ_EXAMPLES`` raises the count for a
longer local run; the real campaign is ``python benchmarks/fuzz.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("PV_FUZZ_EXAMPLES", "100"))

settings.register_profile(
    "pv-fuzz",
    max_examples=EXAMPLES,
    deadline=None,  # hangs are caught by the harness's alarm, slowness by the campaign
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
settings.register_profile("pv-fuzz-ci", settings.get_profile("pv-fuzz"), derandomize=True,
                          database=None, print_blob=True)


def fuzz_settings() -> settings:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return settings.get_profile("pv-fuzz-ci" if in_ci else "pv-fuzz")
