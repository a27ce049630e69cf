"""What a ``live_requirements`` entry may name: the facts pv measures, and nothing else.

A falsifier's ``live_requirements`` (and each ``discharge.matrix`` target) lists
facts a passing run must show for its evidence to count as live. pv measures
exactly the facts in ``REQUIREMENTS`` from what a test ran (``pv.falsify.facts``);
any other key could never be met, so the falsifier could never be live. This
table is the one place those facts are named: the schema's
``$defs/live_requirements`` is ``schema_def()`` (a test keeps the file equal to
it), the typed model mirrors it, and PV034 reports a key outside it.

Matching (``pv.falsify.facts``): a string is compared case-insensitively, a
device family names every index in it (``cuda`` is met by ``cuda:0``), and a
list of values means "any of them".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pv.contract.findings import ERROR, KeyPath
from pv.contract.load import Document
from pv.contract.rulebase import Issue, RuleContext, close_match, falsifiers

RULE = "PV034"


@dataclass(frozen=True)
class Requirement:
    """One measurable fact: its key, the values it may take (or their pattern), what it means."""

    name: str
    meaning: str
    values: tuple[str, ...] = ()  # allowed values; empty: any non-empty string (or ``pattern``)
    pattern: str | None = None

    def scalar_schema(self) -> dict[str, Any]:
        """The JSON schema of one value of this fact."""
        if self.values:
            return {"enum": list(self.values)}
        if self.pattern is not None:
            return {"type": "string", "pattern": self.pattern}
        return {"type": "string", "minLength": 1}

    def schema(self) -> dict[str, Any]:
        """One value, or a non-empty list of them ("any of them")."""
        one = self.scalar_schema()
        return {"description": self.meaning,
                "anyOf": [one, {"type": "array", "minItems": 1, "items": one}]}


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("device", "the device every measured tensor was on (cuda is met by cuda:0)",
                ("cpu", "cuda")),
    Requirement("dtype", "the dtype of every measured tensor",
                ("float64", "float32", "float16", "bfloat16")),
    Requirement("weights", "whether the loaded model's weights were read from files and are not "
                "pv's synthetic ones", ("synthetic", "real")),
    Requirement("model_sha256", "sha256 of the model's weight file (a folder: of its files' names "
                "and hashes), as pv measures it", pattern="^[0-9a-f]{64}$"),
    Requirement("model_fingerprint", "the loaded model's fingerprint (also recorded in a capture's "
                "manifest)"),
    Requirement("architecture", "the loaded model's architecture, from its config"),
)
#: The facts a run can show, in the order ``pv.falsify.facts`` lists them.
MEASURED_KEYS: tuple[str, ...] = tuple(r.name for r in REQUIREMENTS)
BY_NAME: dict[str, Requirement] = {r.name: r for r in REQUIREMENTS}

_DESCRIPTION = ("Facts a passing run must show for its evidence to count as live (FUNCTIONAL): "
                "only facts pv measures; a list of values means any of them.")


def schema_def() -> dict[str, Any]:
    """``$defs/live_requirements`` as the table defines it."""
    return {"description": _DESCRIPTION, "type": "object", "additionalProperties": False,
            "properties": {r.name: r.schema() for r in REQUIREMENTS}}


def _unknown(where: str, mapping: dict[Any, Any], path: KeyPath, outcome: str) -> Iterator[Issue]:
    absent = tuple(k for k in MEASURED_KEYS if k not in mapping)
    for key in mapping:
        name = key if isinstance(key, str) else str(key)
        if name in BY_NAME:
            continue
        guess = close_match(name, absent, 0.7)
        hint = f"; did you mean '{guess}'?" if guess else ""
        yield Issue(path + (name,), f"{where}.{name} is not a fact pv measures "
                    f"({', '.join(MEASURED_KEYS)}): no run could meet it, so the falsifier "
                    f"could never be {outcome}{hint}", ERROR)


def rule_unmeasurable(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """A requirement key no run can measure, in ``live_requirements`` or a discharge target."""
    for i, test in falsifiers(doc):
        base: KeyPath = ("falsification_tests", i)
        reqs = test.get("live_requirements")
        if isinstance(reqs, dict):
            yield from _unknown("live_requirements", reqs, base + ("live_requirements",), "live")
        discharge = test.get("discharge")
        matrix = discharge.get("matrix") if isinstance(discharge, dict) else None
        for j, target in enumerate(matrix if isinstance(matrix, list) else []):
            if isinstance(target, dict):
                yield from _unknown(f"discharge.matrix[{j}]", target,
                                    base + ("discharge", "matrix", j), "discharged")

