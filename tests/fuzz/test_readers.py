"""Every reader, on hostile files: a clean result or a one-line error, never a crash or a hang.

One property test per row of ``readers.TARGETS``; the budget comes from
``profiles`` (a few seconds per reader here, ``benchmarks/fuzz.py`` for the
campaign of 10,000 cases and more per reader).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .profiles import fuzz_settings
from .readers import TARGETS, cases


def check(name: str, case: Any) -> None:
    target = TARGETS[name]
    with harness.scratch(name) as tmp:
        outcome = target.run(case, Path(tmp))
    assert not outcome.finding, f"{name}: {outcome.kind}: {outcome.detail}"


@pytest.mark.parametrize("name", list(TARGETS))
@fuzz_settings()
@given(data=st.data())
def test_reader_never_crashes_or_hangs(name: str, data: st.DataObject) -> None:
    check(name, data.draw(cases(name), label="case"))
