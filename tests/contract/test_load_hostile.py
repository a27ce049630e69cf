"""Hostile contract YAML: each input found by fuzzing is one located finding, never an internal error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pv.cli import run
from pv.contract.load import ContractLoadError, load_document
from pv.contract.validate import validate_paths

HEAD = "metadata:\n  version: '1'\n  description: d\n"


def _finding(path: Path) -> tuple[str, int, str]:
    with pytest.raises(ContractLoadError) as info:
        load_document(path)
    f = info.value.finding
    return f.rule, f.line, f.message


@pytest.mark.parametrize("value, words", [
    ("!!int abc", "'abc' is not a valid !!int"),
    ("!!bool maybe", "'maybe' is not a valid !!bool"),
    ("!!float x", "'x' is not a valid !!float"),
    ("!!int 0b12", "is not a valid !!int"),
])
def test_bad_values_for_type_tags_are_one_finding(write, value, words):
    rule, line, message = _finding(write(HEAD + f"  kind: {value}\n"))
    assert (rule, line) == ("PV004", 4) and words in message


@pytest.mark.parametrize("tag", ["!!binary aGk=", "!!set {a: null}", "!!omap [a: 1]", "!!pairs [a: 1]"])
def test_tags_that_build_non_json_values_are_refused(write, tag):
    rule, line, message = _finding(write(HEAD + f"  kind: {tag}\n"))
    assert rule == "PV008" and line == 4 and "not supported" in message


@pytest.mark.parametrize("literal", ["1" * 5000, "0x" + "f" * 5000, "1:" * 800 + "1"])
def test_huge_integers_are_refused_not_a_crash(write, literal):
    rule, line, message = _finding(write(HEAD + f"  kind: {literal}\n"))
    assert rule == "PV004" and line == 4 and "over the 1000-character bound" in message


def test_integers_under_the_bound_still_format_in_messages(write, capsys):
    # 990 hex digits (~1190 decimal): under the bound, so repr() in a message must work.
    path = write("metadata:\n  version: 0x" + "f" * 990 + "\n  description: d\n")
    assert run(["validate", "--format", "json", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "PV011" in {f["rule"] for f in out["findings"]}


@pytest.mark.parametrize("text", [
    "metadata: &m\n  version: '1'\n  description: d\n  self: *m\n",
    "metadata:\n  version: '1'\n  description: d\nx: &l [1, *l]\n",
    "metadata:\n  version: '1'\n  description: d\nx: &m\n  <<: *m\n",
])
def test_self_referencing_alias_is_refused(write, text):
    rule, _, message = _finding(write(text))
    assert rule == "PV007" and "recursive structure" in message


def test_plain_long_list_is_not_an_alias_bomb(write):
    path = write(HEAD + "items:\n" + "- 1\n" * 200_000)
    assert len(load_document(path).data["items"]) == 200_000


def test_many_keys_with_many_findings_stay_linear(write):
    # Every key is a near-miss of a known one: 20,000 located findings.
    body = "".join(f"metadat{i}: 1\n" for i in range(20_000))
    path = write(HEAD + body)
    start = time.perf_counter()
    report = validate_paths([path], check_evidence=False)
    assert time.perf_counter() - start < 30  # quadratic locating took minutes
    assert report.files == 1


def test_undecodable_file_name_prints_as_escapes(tmp_path, capsys):
    name = tmp_path / "bad\udcffname.yaml"
    name.write_text("metadata:\n  version: 1.0\n  description: d\n", encoding="utf-8")
    assert run(["validate", str(name)]) == 0
    out = capsys.readouterr().out
    assert "bad\\xffname.yaml:2:3: warning PV011" in out
    assert run(["validate", "--format", "json", str(name)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all(f["file"].endswith("bad\\xffname.yaml") for f in data["findings"])
    assert data["contracts"][0]["file"].endswith("bad\\xffname.yaml")


@pytest.mark.parametrize("name", ["a" * 300, "x\x00y", "é" * 200])
def test_references_that_name_no_possible_file(tmp_path, name):
    # Fuzz finding: a depends_on entry or cited evidence path longer than a file name
    # may be (ENAMETOOLONG), or holding a NUL, names nothing; it is not an internal error.
    (tmp_path / ".git").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({
        "metadata": {"version": "1", "description": "d", "depends_on": [name]},
        "falsification_tests": [{"id": "F-1", "rule": "r", "prediction": "p", "test": "t",
                                 "if_fails": "f", "algorithm_evidence": {
                                     "file_paths": [name, f"src/{name}.py"],
                                     "function_names": ["f"]}}]}), encoding="utf-8")
    report = validate_paths([path], check_evidence=True)
    rules = sorted(f.rule for f in report.findings)
    assert rules == ["PV020", "PV022", "PV022"], [f.format() for f in report.findings]


def test_a_plain_equals_sign_is_text(write):
    # YAML 1.1 gives a plain "=" the tag !!value, which PyYAML cannot construct.
    data = load_document(write(HEAD + "  kind: =\n=: 1\n")).data
    assert data["metadata"]["kind"] == "=" and data["="] == 1


def _at_stack_depth(frames: int, call):
    """``call()`` from ``frames`` Python frames deeper than here, as a deep caller would make it."""
    return call() if frames == 0 else _at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("depth", [328, 400, 511])
@pytest.mark.parametrize("frames", [0, 600])
@pytest.mark.parametrize("bracket", ["[", "{a: "])
def test_flow_nesting_within_the_bound_loads_whatever_the_callers_stack(write, depth, frames, bracket):
    # The root mapping is one level, so 511 flow levels under it reach exactly MAX_DEPTH (512).
    # Building the data used to recurse two frames a level: past ~328 levels it hit Python's
    # recursion limit (sooner from a deeper caller) and was refused as PV004 "nested too deeply".
    close = "]" if bracket == "[" else "}"
    inner = "1" if bracket != "[" else ""
    path = write(HEAD + "x: " + bracket * depth + inner + close * depth + "\n")
    doc = _at_stack_depth(frames, lambda: load_document(path))
    node, levels = doc.data["x"], 1
    while isinstance(node, (list, dict)) and node:
        node = node[0] if isinstance(node, list) else node["a"]
        levels += 1
    assert levels >= depth
    report = _at_stack_depth(frames, lambda: validate_paths([path], check_evidence=False))
    assert not [f for f in report.findings if f.rule in ("PV004", "PV009")]


def test_flow_nesting_past_the_bound_is_pv009(write):
    rule, line, message = _finding(write(HEAD + "x: " + "[" * 512 + "]" * 512 + "\n"))
    assert rule == "PV009" and line == 4 and "nested more than 512 deep" in message
