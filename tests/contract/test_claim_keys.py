"""A misspelt claim-bearing key is an error (PV033), other typos a warning (PV021), never both."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml

from pv.contract.typos import (
    CLAIM_KEYS,
    FALSIFIER_KEYS,
    METADATA_KEYS,
    OBLIGATION_KEYS,
    TOP_LEVEL_KEYS,
)
from pv.contract.validate import validate_files


def _findings(write, text: str) -> list[Any]:
    return list(validate_files([write(text)], check_evidence=False).findings)


def _base() -> dict[str, Any]:
    return {
        "metadata": {"id": "c-v1", "version": "1", "description": "d"},
        "equations": {"e": {"formula": "y = x"}},
        "proof_obligations": [{"id": "PO-C-001", "type": "bound", "property": "p"}],
        "falsification_tests": [{"id": "F-1", "rule": "r", "prediction": "p", "test": "t.py::t",
                                 "if_fails": "f"}],
    }


def test_claim_keys_are_known_keys_of_their_mapping():
    known = {"contract": TOP_LEVEL_KEYS, "falsifier": FALSIFIER_KEYS,
             "obligation": OBLIGATION_KEYS, "metadata": METADATA_KEYS}
    for kind, claims in CLAIM_KEYS.items():
        assert set(claims) <= set(known[kind]), kind


def test_the_live_requirement_typo_is_an_error_and_nothing_else(write):
    data = _base()
    data["falsification_tests"][0]["live_requirement"] = {"device": "cuda"}
    found = _findings(write, yaml.safe_dump(data, sort_keys=False))
    assert [(f.rule, f.severity, f.path) for f in found] == [
        ("PV033", "error", ("falsification_tests", 0, "live_requirement"))]
    assert found[0].format().endswith(
        "error PV033: unknown key 'live_requirement' where 'live_requirements' belongs: pv would "
        "not read this claim (the falsifier would count as having no live requirements); rename it")


FT = ("falsification_tests", 0)
PO = ("proof_obligations", 0)


@pytest.mark.parametrize("section, typo, meant", [
    ((), "metdata", "metadata"), ((), "falsification_test", "falsification_tests"),
    ((), "proof_obligation", "proof_obligations"), ((), "equation", "equations"),
    (FT, "Id", "id"), (FT, "tests", "test"), (FT, "predictions", "prediction"),
    (FT, "rules", "rule"), (FT, "live-requirements", "live_requirements"),
    (FT, "dischage", "discharge"), (FT, "algorithm_evidense", "algorithm_evidence"),
    (FT, "stauts", "status"), (FT, "statsu", "status"),
    (PO, "ID", "id"), (PO, "propery", "property"), (PO, "formall", "formal"),
    (PO, "tolerence", "tolerance"), (("metadata",), "Id", "id"),
])
def test_every_claim_key_typo_is_an_error(write, section, typo, meant):
    data = _base()
    target: Any = data
    for part in section:
        target = target[part]
    target[typo] = target.pop(meant, "x")
    hits = [f for f in _findings(write, yaml.safe_dump(data, sort_keys=False))
            if f.path == section + (typo,)]
    assert [(f.rule, f.severity) for f in hits] == [("PV033", "error")], hits
    assert f"unknown key '{typo}' where '{meant}' belongs" in hits[0].message
    assert CLAIM_KEYS[{(): "contract", FT: "falsifier", PO: "obligation"}.get(
        section, "metadata")][meant] in hits[0].message


def test_other_typos_stay_warnings(write):
    data = _base()
    data["falsification_tests"][0]["if_fail"] = data["falsification_tests"][0].pop("if_fails")
    data["metadata"]["auther"] = "me"
    data["kani_harness"] = []
    found = [(f.rule, f.severity, f.path[-1]) for f in _findings(write, yaml.safe_dump(data))
             if f.rule in ("PV021", "PV033")]
    assert sorted(found) == [("PV021", "warning", "auther"), ("PV021", "warning", "if_fail"),
                             ("PV021", "warning", "kani_harness")]


def test_no_key_gets_two_findings(write):
    data = _base()
    test = data["falsification_tests"][0]
    test["if_fail"] = test.pop("if_fails")
    test.update({"live_requirement": {}, "stauts": "FUNCTIONAL", "tested": "yes"})
    data["falsification_tests"].append(dict(test, id="F-2", status_v1="x"))
    del data["falsification_tests"][1]["stauts"]
    data["proof_obligations"][0].update({"tolerence": 1, "applies_too": "x"})
    data["metadata"]["ID"] = data["metadata"].pop("id")
    found = _findings(write, yaml.safe_dump(data))
    per_key = Counter(f.path for f in found)
    assert per_key and max(per_key.values()) == 1, per_key
    rules = {f.path[-1]: f.rule for f in found}
    # status_v1 is a status written elsewhere: PV025's finding, not a typo.
    assert rules["status_v1"] == "PV025"
    assert {rules[k] for k in ("live_requirement", "stauts", "tolerence", "ID")} == {"PV033"}
    assert rules["if_fail"] == "PV021" and rules["applies_too"] == "PV021"
    assert "tested" not in rules  # 'test' is there: it cannot be the key meant


@pytest.mark.parametrize("key", ["applies_to_phase", "test_notes", "id_prefix", "rule_source"])
def test_a_known_key_extended_by_a_word_is_a_key_of_its_own(write, key):
    data = _base()
    data["proof_obligations"][0][key] = "x"
    data["falsification_tests"][0][key] = "x"
    assert [f for f in _findings(write, yaml.safe_dump(data)) if f.path[-1] == key] == []


def test_a_present_key_is_never_the_suggestion(write):
    data = _base()
    data["falsification_tests"][0]["tests"] = ["t.py::u"]  # 'test' is there: not a typo of it
    data["falsification_tests"][0]["live_requirements"] = {"device": "cuda"}
    data["falsification_tests"][0]["live_requirement"] = {"weights": "real"}
    found = _findings(write, yaml.safe_dump(data))
    assert [f for f in found if f.rule in ("PV021", "PV033")] == []


@pytest.mark.parametrize("key", ["Status", "status_v1", "discharge_status"])
def test_a_status_under_another_key_is_left_to_pv025(write, key):
    data = _base()
    data["falsification_tests"][0][key] = "FUNCTIONAL"
    found = [(f.rule, f.path[-1]) for f in _findings(write, yaml.safe_dump(data))]
    assert found == [("PV025", key)]
