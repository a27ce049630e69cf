"""The pydantic models and the JSON schema describe the same structure.

Two proofs: (1) structurally, for every ``$defs`` entry, the same property set,
the same required keys, the same enums and the same open/closed choice;
(2) behaviourally, both accept and reject exactly the same documents over the
real-world corpus and a table of mutations. ``validate`` relies on this: it
uses the models as a fast path and walks the schema only when they reject.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from pv.contract.schema import contract_schema, schema_errors
from pv.contract.structure import MODELS_BY_DEF, Contract, conforms

REPO = Path(__file__).resolve().parents[2]
#: Real-world contracts kept beside the checkout (read-only); tests skip without them.
CORPUS = REPO.parent / "shared" / "corpus" / "contracts-in-the-wild"


def test_schema_is_valid_2020_12():
    schema = contract_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_packaged_schema_is_the_repository_file():
    on_disk = (REPO / "schemas" / "contract.schema.json").read_text(encoding="utf-8")
    import json

    assert contract_schema() == json.loads(on_disk)


def _pairs() -> list[tuple[str, dict[str, Any], type]]:
    schema = contract_schema()
    pairs = [("<root>", schema, Contract)]
    pairs += [(name, schema["$defs"][name], model) for name, model in MODELS_BY_DEF.items()]
    return pairs


def test_every_schema_def_has_a_model():
    assert set(contract_schema()["$defs"]) == set(MODELS_BY_DEF)


@pytest.mark.parametrize("name, sub, model", _pairs(), ids=[p[0] for p in _pairs()])
def test_properties_required_and_openness_agree(name, sub, model):
    fields = model.model_fields
    assert set(sub.get("properties", {})) == set(fields), name
    required = {n for n, f in fields.items() if f.is_required()}
    assert set(sub.get("required", [])) == required, name
    closed = sub.get("additionalProperties") is False
    assert closed == (model.model_config.get("extra") == "forbid"), name


def test_requirement_enums_agree():
    """Each measurable fact's values: the model's Literal, for one value and in a list."""
    lr = contract_schema()["$defs"]["live_requirements"]["properties"]
    fields = MODELS_BY_DEF["live_requirements"].model_fields
    checked = 0
    for key, spec in lr.items():
        one = spec["anyOf"][0]
        if "enum" not in one:
            continue
        literal = next(a for a in typing.get_args(fields[key].annotation)
                       if typing.get_origin(a) is typing.Literal)
        assert set(typing.get_args(literal)) == set(one["enum"]), key
        checked += 1
    assert checked == 3  # device, dtype, weights


BASE: dict[str, Any] = {
    "metadata": {"version": "1", "description": "d"},
    "equations": {"e": {"formula": "f"}},
    "proof_obligations": [{"type": "bound", "property": "p"}],
    "falsification_tests": [{"id": "A", "rule": "r", "prediction": "p", "test": "t",
                             "if_fails": "f"}],
}


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _drop(path: tuple[Any, ...]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


FT = ("falsification_tests", 0)
MUTATIONS: dict[str, dict[str, Any]] = {
    "base": BASE,
    "version float": _set(("metadata", "version"), 1.0),
    "version int": _set(("metadata", "version"), 1),
    "version bool": _set(("metadata", "version"), True),
    "version null": _set(("metadata", "version"), None),
    "version list": _set(("metadata", "version"), ["1"]),
    "no description": _drop(("metadata", "description")),
    "no metadata": _drop(("metadata",)),
    "metadata list": _set(("metadata",), ["x"]),
    "references null": _set(("metadata", "references"), None),
    "references of ints": _set(("metadata", "references"), [1]),
    "depends_on string": _set(("metadata", "depends_on"), "a"),
    "binds_to anything": _set(("metadata", "binds_to"), {"x": [1]}),
    "metadata extra": _set(("metadata", "whatever"), [1, 2]),
    "equations list": _set(("equations",), [{"formula": "f"}]),
    "equations null": _set(("equations",), None),
    "formula int": _set(("equations", "e", "formula"), 3),
    "no formula": _drop(("equations", "e", "formula")),
    "invariants string": _set(("equations", "e", "invariants"), "x"),
    "equation int key": {**BASE, "equations": {1: {"formula": "f"}}},
    "top-level int key": {**BASE, 7: "x"},
    "obligation no type": _drop(("proof_obligations", 0, "type")),
    "tolerance string": _set(("proof_obligations", 0, "tolerance"), "1e-5"),
    "tolerance bool": _set(("proof_obligations", 0, "tolerance"), True),
    "applies_to list": _set(("proof_obligations", 0, "applies_to"), ["a", 1]),
    "applies_to int": _set(("proof_obligations", 0, "applies_to"), 1),
    "obligations mapping": _set(("proof_obligations",), {"a": 1}),
    "falsifier no id": _drop(FT + ("id",)),
    "falsifier id int": _set(FT + ("id",), 5),
    "falsifier status int": _set(FT + ("status",), 3),
    "falsifier extra": _set(FT + ("name",), "n"),
    "evidence mapping": _set(FT + ("algorithm_evidence",), {"file_paths": ["a"], "notes": "n"}),
    "evidence list": _set(FT + ("algorithm_evidence",), ["a", "b"]),
    "evidence list of ints": _set(FT + ("algorithm_evidence",), [1]),
    "evidence typo key": _set(FT + ("algorithm_evidence",), {"file_path": ["a"]}),
    "evidence null notes": _set(FT + ("algorithm_evidence",), {"notes": None}),
    "live ok": _set(FT + ("live_requirements",), {"device": "cuda", "weights": "real"}),
    "live every fact": _set(FT + ("live_requirements",), {
        "device": "cpu", "dtype": "bfloat16", "weights": "synthetic", "model_sha256": "a" * 64,
        "model_fingerprint": "fp", "architecture": "LlamaForCausalLM"}),
    "live lists": _set(FT + ("live_requirements",), {"device": ["cpu", "cuda"],
                                                      "dtype": ["float32"], "model_sha256": ["0" * 64],
                                                      "architecture": ["A", "B"]}),
    "live empty list": _set(FT + ("live_requirements",), {"dtype": []}),
    "live bad device": _set(FT + ("live_requirements",), {"device": "tpu"}),
    "live bad device in list": _set(FT + ("live_requirements",), {"device": ["cuda", "tpu"]}),
    "live bad sha": _set(FT + ("live_requirements",), {"model_sha256": "A" * 64}),
    "live empty fingerprint": _set(FT + ("live_requirements",), {"model_fingerprint": ""}),
    "live int architecture": _set(FT + ("live_requirements",), {"architecture": 3}),
    "live null fact": _set(FT + ("live_requirements",), {"device": None}),
    "live unmeasured fact": _set(FT + ("live_requirements",), {"backend": "triton"}),
    "live unmeasured list": _set(FT + ("live_requirements",), {"extra": [1]}),
    "live int key": _set(FT + ("live_requirements",), {1: "x"}),
    "live string": _set(FT + ("live_requirements",), "cuda"),
    "matrix ok": _set(FT + ("discharge",), {"matrix": [{"dtype": ["float32", "bfloat16"]}]}),
    "matrix unmeasured": _set(FT + ("discharge",), {"matrix": [{"gpu": "h100"}]}),
    "binds_to list": _set(FT + ("binds_to",), ["x"]),
    "binds_to int": _set(FT + ("binds_to",), 1),
    "binds_to list of ints": _set(FT + ("binds_to",), [1]),
    "kani anything": _set(("kani_harnesses",), "x"),
    "document list": [1],  # type: ignore[dict-item]
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_models_and_schema_give_the_same_verdict(name):
    data = MUTATIONS[name]
    assert conforms(data) == (not list(schema_errors(data))), name


def test_mutation_table_covers_both_verdicts():
    verdicts = {conforms(d) for d in MUTATIONS.values()}
    assert verdicts == {True, False}


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_corpus_verdicts_agree(path):
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    assert conforms(data) == (not list(schema_errors(data)))


def test_repository_contracts_agree_and_conform():
    for path in sorted((REPO / "contracts").glob("*.yaml")):
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        assert conforms(data) and not list(schema_errors(data)), path
