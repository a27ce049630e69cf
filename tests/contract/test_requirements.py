"""Live requirements name only facts pv measures: one table, the schema, the model and PV034 agree."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pv.contract.requirements import MEASURED_KEYS, REQUIREMENTS, schema_def
from pv.contract.schema import contract_schema
from pv.contract.structure import LiveRequirements
from pv.contract.validate import validate_files


def test_schema_def_is_the_table():
    assert contract_schema()["$defs"]["live_requirements"] == schema_def()
    # discharge.matrix targets take the same definition.
    matrix = contract_schema()["$defs"]["discharge"]["properties"]["matrix"]
    assert matrix["items"] == {"$ref": "#/$defs/live_requirements"}


def test_measured_keys_are_the_facts_the_falsifier_measures():
    from pv.falsify import facts

    assert MEASURED_KEYS == facts.MEASURED_KEYS
    assert MEASURED_KEYS == ("device", "dtype", "weights", "model_sha256", "model_fingerprint",
                             "architecture")
    assert tuple(LiveRequirements.model_fields) == MEASURED_KEYS
    assert all(r.meaning and "\n" not in r.meaning for r in REQUIREMENTS)


def _contract(reqs: Any, matrix: Any = None) -> str:
    test: dict[str, Any] = {"id": "F-1", "rule": "r", "prediction": "p", "test": "t.py::t",
                            "if_fails": "f", "live_requirements": reqs}
    if matrix is not None:
        test["discharge"] = {"matrix": matrix}
    return yaml.safe_dump({"metadata": {"version": "1", "description": "d"},
                           "falsification_tests": [test]}, sort_keys=False)


def _found(write, reqs: Any, matrix: Any = None) -> list[tuple[str, tuple[Any, ...], str]]:
    report = validate_files([write(_contract(reqs, matrix))], strict=True, check_evidence=False)
    return [(f.rule, f.path, f.message) for f in report.findings]


LR = ("falsification_tests", 0, "live_requirements")


@pytest.mark.parametrize("reqs", [
    {"device": "cuda", "weights": "real"},
    {"device": ["cpu", "cuda"], "dtype": ["float32", "bfloat16"]},
    {"model_sha256": "0" * 64, "model_fingerprint": "abc", "architecture": ["LlamaForCausalLM"]},
])
def test_measurable_requirements_pass(write, reqs):
    assert _found(write, reqs, [reqs]) == []


def test_an_unmeasurable_key_is_one_clear_finding(write):
    found = _found(write, {"backend": "triton", "device": "cuda"})
    assert found == [("PV034", LR + ("backend",),
                      ("live_requirements.backend is not a fact pv measures (device, dtype, "
                      "weights, model_sha256, model_fingerprint, architecture): no run could meet "
                      "it, so the falsifier could never be live"))]


def test_a_close_key_gets_a_suggestion_and_no_schema_finding(write):
    found = _found(write, {"devices": ["cuda"], "Dtype": "float32"})
    assert [(r, p[-1]) for r, p, _ in found] == [("PV034", "devices"), ("PV034", "Dtype")]
    assert found[0][2].endswith("; did you mean 'device'?")
    assert found[1][2].endswith("; did you mean 'dtype'?")


def test_matrix_targets_are_checked_too(write):
    found = _found(write, {"device": "cuda"}, [{"dtype": "float32"}, {"gpu": "h100"}])
    assert found == [("PV034", ("falsification_tests", 0, "discharge", "matrix", 1, "gpu"),
                      ("discharge.matrix[1].gpu is not a fact pv measures (device, dtype, weights, "
                      "model_sha256, model_fingerprint, architecture): no run could meet it, so "
                      "the falsifier could never be discharged"))]


def test_a_non_string_key_is_reported_once(write):
    text = _contract({"device": "cuda"}).replace("    device: cuda", "    1: cuda")
    assert "    1: cuda" in text
    report = validate_files([write(text)], check_evidence=False)
    assert [(f.rule, f.path) for f in report.findings] == [("PV034", LR + ("1",))]


@pytest.mark.parametrize("reqs, path, text", [
    ({"device": "tpu"}, LR + ("device",), "'tpu' is not one of cpu, cuda"),
    ({"device": ["cuda", "tpu"]}, LR + ("device", 1), "'tpu' is not one of cpu, cuda"),
    ({"dtype": []}, LR + ("dtype",), "dtype"),
    ({"model_sha256": "ABC"}, LR + ("model_sha256",), "does not match"),
    ({"model_fingerprint": ""}, LR + ("model_fingerprint",), "model_fingerprint"),
])
def test_bad_values_of_measured_facts_stay_schema_findings(write, reqs, path, text):
    found = _found(write, reqs)
    assert [(r, p) for r, p, _ in found] == [("PV010", path)], found
    assert text in found[0][2] and "\n" not in found[0][2]


def test_an_unmeasurable_key_beside_a_bad_value_gets_each_its_finding(write):
    found = _found(write, {"device": "tpu", "backend": "x"})
    assert sorted((r, p[-1]) for r, p, _ in found) == [("PV010", "device"), ("PV034", "backend")]
