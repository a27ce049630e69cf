"""Claims that cannot be tested as written: no falsifiers, placeholder text, a value set twice.

All warnings: each is a contract that validates structurally but that its
author would not want to ship as it stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pv.contract.findings import WARNING
from pv.contract.load import Document
from pv.contract.rulebase import Issue, RuleContext, falsifiers, metadata, shown
from pv.contract.schema import DIALECT

#: Placeholder markers, as whole upper-case words (``TBD``, ``TODO``, ``FIXME``, ``XXX``, ``???``).
PLACEHOLDER = re.compile(r"(?<![\w])(?:TBD|TODO|FIXME|XXX)(?![\w])|\?\?\?")
#: Top-level keys a contract also has under ``metadata`` (a common slip in real files).
META_AT_TOP = ("version", "description", "references", "status", "depends_on", "author",
               "created", "kind")


def rule_no_falsifiers(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    tests = doc.data.get("falsification_tests")
    if tests is None or tests == []:
        path = ("falsification_tests",) if "falsification_tests" in doc.data else ()
        yield Issue(path, "the contract has no falsification tests: nothing could refute its "
                    "claims, and pv falsify has nothing to run", WARNING)


def rule_placeholders(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    equations = doc.data.get("equations")
    if isinstance(equations, dict):
        for name, eq in equations.items():
            formula = eq.get("formula") if isinstance(eq, dict) else None
            if isinstance(formula, str) and (hit := PLACEHOLDER.search(formula)):
                yield Issue(("equations", name, "formula"),
                            f"equation '{name}' has placeholder text ({hit.group(0)}) in its "
                            "formula: a claim still to be written", WARNING)
    for i, test in falsifiers(doc):
        prediction = test.get("prediction")
        if isinstance(prediction, str) and (hit := PLACEHOLDER.search(prediction)):
            yield Issue(("falsification_tests", i, "prediction"),
                        f"falsifier {test.get('id', i)!s} has placeholder text ({hit.group(0)}) in "
                        "its prediction: nothing definite can refute it yet", WARNING)


def rule_set_twice(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """A top-level key that ``metadata`` also sets, to a different value: which one is true?"""
    meta = metadata(doc)
    for key in META_AT_TOP:
        if key in doc.data and key in meta and doc.data[key] != meta[key] and key != "status":
            yield Issue((key,), f"'{key}' is set twice with different values: top-level "
                        f"{shown(doc.data[key])} and metadata.{key} {shown(meta[key])}; pv reads "
                        f"metadata.{key}: remove the other", WARNING)


def rule_test_missing(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    for i, test in falsifiers(doc):
        if "test" not in test and isinstance(test.get("id"), str):
            alias = next((a for a in DIALECT["test"] if a in test), None)
            hint = f" (it writes '{alias}', another dialect: pv reads 'test')" if alias else ""
            yield Issue(("falsification_tests", i),
                        f"falsifier {test['id']} names no 'test'{hint}: pv falsify cannot bind it "
                        "to a test, so it stays where it is on the ladder", WARNING)
