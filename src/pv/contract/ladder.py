"""The falsifier status ladder.

    FALSIFIED < PROPOSED < BLOCKER_* < PARTIAL_ALGORITHM_LEVEL < FUNCTIONAL < DISCHARGED

- ``PROPOSED``: a claim with no test yet.
- ``BLOCKER_*`` (a family: ``BLOCKER_FIXTURE_ABSENT``, ``BLOCKER_UPSTREAM_MISSING``, ...): a test
  exists but cannot run here; counted as blocked, never as progress.
- ``PARTIAL_ALGORITHM_LEVEL``: the test passed, but not on the real target (e.g. CPU with a
  synthetic model where CUDA and real weights are required).
- ``FUNCTIONAL``: the test passed on evidence meeting the falsifier's live requirements.
- ``DISCHARGED``: proved or otherwise closed beyond testing; only set by hand with a reason.
- ``FALSIFIED``: the prediction was refuted by a failing test. Ranked lowest: moving to it is
  a regression.

Spellings normalise: case and ``-``/``_`` variants (``functional``, ``BLOCKER-UPSTREAM-MISSING``).
"""

from __future__ import annotations

import re

FALSIFIED = "FALSIFIED"
PROPOSED = "PROPOSED"
BLOCKER_PREFIX = "BLOCKER_"
BLOCKER_FIXTURE_ABSENT = "BLOCKER_FIXTURE_ABSENT"
PARTIAL = "PARTIAL_ALGORITHM_LEVEL"
FUNCTIONAL = "FUNCTIONAL"
DISCHARGED = "DISCHARGED"

#: Named rungs, lowest first. Every ``BLOCKER_*`` shares the blocker rung.
RUNGS: tuple[str, ...] = (FALSIFIED, PROPOSED, "BLOCKER_*", PARTIAL, FUNCTIONAL, DISCHARGED)
_RANK = {FALSIFIED: 0, PROPOSED: 1, PARTIAL: 3, FUNCTIONAL: 4, DISCHARGED: 5}
BLOCKER_RANK = 2
_BLOCKER_RE = re.compile(r"^BLOCKER_[A-Z0-9]+(?:_[A-Z0-9]+)*$")


def normalize(status: object) -> str | None:
    """The canonical spelling of a falsifier status, or None if it is not on the ladder."""
    if not isinstance(status, str):
        return None
    text = re.sub(r"[\s\-]+", "_", status.strip()).upper()
    if text in _RANK or _BLOCKER_RE.match(text):
        return text
    return None


def is_blocker(status: str) -> bool:
    return status.startswith(BLOCKER_PREFIX)


def rank(status: str) -> int:
    """Position on the ladder (higher is further along); ValueError for unknown statuses."""
    canon = normalize(status)
    if canon is None:
        raise ValueError(f"unknown status {status!r}")
    return BLOCKER_RANK if is_blocker(canon) else _RANK[canon]


def at_least(status: str, floor: str) -> bool:
    return rank(status) >= rank(floor)


def is_progress(status: str) -> bool:
    """Counts toward the share of work done: PARTIAL_ALGORITHM_LEVEL or better."""
    return rank(status) >= _RANK[PARTIAL]


#: Words real contracts use for a status, with the rung each clearly means.
#: Words with no clear rung (``ACTIVE``, ``SHIPPED``, ``ENFORCED``) are left out on
#: purpose: they say a contract is in use, not how well its claims were tested.
SYNONYMS: dict[str, str] = {
    "PARTIAL": PARTIAL,
    "PARTIAL_ALGORITHM": PARTIAL,
    "ALGORITHM_LEVEL": PARTIAL,
    "ACTIVE_FUNCTIONAL": FUNCTIONAL,
    "DRAFT": PROPOSED,
    "PENDING": PROPOSED,
    "PROPOSAL": PROPOSED,
    "PLANNED": PROPOSED,
    "BLOCKED": "BLOCKER_UNSPECIFIED",
    "REFUTED": FALSIFIED,
    "FAILED": FALSIFIED,
}


def interpret(status: object) -> str | None:
    """The rung a status written by hand means: its canonical spelling, a clear
    synonym's rung (``partial`` -> PARTIAL_ALGORITHM_LEVEL, ``draft`` -> PROPOSED), or None.

    Only reports use this; promotion and the gate read ``normalize`` alone, so a
    synonym never moves a falsifier.
    """
    canon = normalize(status)
    if canon is not None or not isinstance(status, str):
        return canon
    return SYNONYMS.get(re.sub(r"[\s\-]+", "_", status.strip()).upper())
