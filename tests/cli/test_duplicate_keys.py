"""A key repeated in a mapping is refused by every reader of user-written YAML/JSON.

YAML and JSON parsers keep the last value silently; in a tolerance file that
quietly changes a stage's tolerance. pv refuses instead, in one line naming the
file, the line and the key: tolerance files, ``pv import`` mapping files,
contracts, ``--device-map`` and the other readers built on ``pv.bounded``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pv import bounded
from pv.capture.importer import mapping
from pv.capture.store.writer import CaptureWriter
from pv.cli import run
from pv.compare.tolerances import load_config
from pv.contract.load import ContractLoadError, load_document
from pv.errors import PvError


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pv: error: "), err
    return err[0]


# --------------------------------------------------------------------------- pv.bounded


@pytest.mark.parametrize(
    ("text", "line", "col", "key", "first"),
    [
        ("cosine: 0.9\nrtol: 1\ncosine: 0.1\n", 3, 1, "'cosine'", 1),
        ("stages:\n  attn_out:\n    rtol: 1\n    atol: 2\n    rtol: 3\n", 5, 5, "'rtol'", 3),
        ("- {a: 1}\n- {b: 1, b: 2}\n", 2, 10, "'b'", 2),
        ("1: a\n0x1: b\n", 2, 1, "1", 1),  # keys compare as values, as in the dict
        ("yes: a\n'x': 1\ntrue: b\n", 3, 1, "True", 1),
        ('"a": 1\na: 2\n', 2, 1, "'a'", 1),
    ],
)
def test_yaml_repeated_key_is_located(text: str, line: int, col: int, key: str, first: int) -> None:
    with pytest.raises(bounded.DataFileError) as info:
        bounded.parse_yaml(text, "f.yaml")
    message = str(info.value)
    assert message.startswith(f"f.yaml:{line}:{col}: duplicate key {key} (first at line {first})")
    assert "\n" not in message


def test_yaml_without_repeats_still_loads() -> None:
    # The same key in sibling mappings, and a merge overridden by the mapping's
    # own key, are not repeats.
    text = "a: {x: 1}\nb: {x: 2}\nbase: &b {x: 1, y: 1}\nc:\n  <<: *b\n  x: 3\nd: [{x: 1}, {x: 2}]\n"
    data = bounded.parse_yaml(text, "f.yaml")
    assert data["c"] == {"x": 3, "y": 1} and data["b"] == {"x": 2}


@pytest.mark.parametrize(
    ("text", "line", "col", "key", "first"),
    [
        ('{"cosine": 0.9,\n "cosine": 0.1}', 2, 2, "'cosine'", 1),
        ('{"stages": {"a": {"rtol": 1}},\n "dtypes": {"bfloat16": {"rtol": 1,\n  "rtol": 2}}}',
         3, 3, "'rtol'", 2),
        ('[{"a": 1}, {"b": "}\\"", "b": 2}]', 1, 25, "'b'", 1),  # brackets inside strings
        ('{"a\\u0062": 1, "ab": 2}', 1, 16, "'ab'", 1),  # escapes decode before comparing
    ],
)
def test_json_repeated_key_is_located(text: str, line: int, col: int, key: str, first: int) -> None:
    with pytest.raises(bounded.DataFileError) as info:
        bounded.parse_json(text, "f.json")
    message = str(info.value)
    assert message.startswith(f"f.json:{line}:{col}: duplicate key {key} (first at line {first})")


def test_json_without_repeats_still_loads() -> None:
    text = '{"a": {"x": 1}, "b": {"x": 2}, "x": [{"x": 1}, {"x": 2}], "s": "x,x"}'
    assert bounded.parse_json(text, "f.json")["b"] == {"x": 2}


def test_json_repeat_deep_inside_is_located_without_recursion() -> None:
    depth = 30
    text = '{"k": ' * depth + '{"z": 1, "z": 2}' + "}" * depth
    with pytest.raises(bounded.DataFileError, match=r"^f.json:1:\d+: duplicate key 'z'"):
        bounded.parse_json(text, "f.json")


# --------------------------------------------------------------------------- tolerance files


@pytest.mark.parametrize(
    ("name", "text", "line", "key"),
    [
        ("tol.yaml", "cosine: 0.99\natol: 0.1\ncosine: 0.5\n", 3, "'cosine'"),
        ("tol.yaml", "stages:\n  attn_out: {rtol: 0.1, rtol: 9}\n", 2, "'rtol'"),
        ("tol.yaml", "stages:\n  attn_out: {rtol: 0.1}\n  attn_out: {rtol: 9}\n", 3, "'attn_out'"),
        ("tol.json", '{"cosine": 0.99,\n "cosine": 0.5}', 2, "'cosine'"),
        ("tol.json", ('{"dtypes": {"bfloat16": {"stages": {"ffn_up": {"atol": 1},\n'
                      ' "ffn_up": {"atol": 5}}}}}'), 2, "'ffn_up'"),
    ],
)
def test_tolerance_file_with_a_repeated_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: int, key: str
) -> None:
    cfg = tmp_path / name
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(PvError, match=f"duplicate key {key}"):
        load_config(cfg)
    for side in ("a", "b"):
        with CaptureWriter(tmp_path / side, {"dtype": "float32"}) as writer:
            writer.write("attn_out", 0, np.ones((2, 64), np.float32), dtype_captured="float32")
    for command in ("diff", "bisect"):
        code = run([command, str(tmp_path / "a"), str(tmp_path / "b"), "--tolerances", str(cfg)])
        assert code == 2
        err = one_error_line(capsys)
        assert f"{cfg}:{line}:" in err and f"duplicate key {key}" in err
    assert cfg.read_text(encoding="utf-8") == text


# --------------------------------------------------------------------------- mapping files

MAPPING = "format: pv-mapping\nversion: 1\n"


@pytest.mark.parametrize(
    ("body", "line", "key"),
    [
        ("rules:\n  - {match: x, stage: embedding}\nversion: 1\n", 5, "'version'"),
        ("rules:\n  - match: x\n    stage: embedding\n    stage: lm_head\n", 6, "'stage'"),
    ],
)
def test_mapping_file_with_a_repeated_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: int, key: str
) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(MAPPING + body, encoding="utf-8")
    with pytest.raises(PvError, match=f"duplicate key {key}"):
        mapping.load(str(p))
    code = run(["import", "whatever.npz", "--mapping", str(p), "-o", str(tmp_path / "o"), "--check"])
    assert code == 2
    err = one_error_line(capsys)
    assert f"{p}:{line}:" in err and f"duplicate key {key}" in err
    assert not (tmp_path / "o").exists()


def test_shipped_mappings_have_no_repeated_keys() -> None:
    for name in mapping.shipped():
        assert mapping.load(name).rules


# --------------------------------------------------------------------------- contracts

CONTRACT = """\
metadata:
  version: "1.0"
  description: d
falsification_tests:
  - id: F-1
    rule: r
    prediction: p
    test: t
    if_fails: f
"""


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (CONTRACT + "metadata: {version: '2.0', description: e}\n", 10, "'metadata'"),
        (CONTRACT.replace("    if_fails: f\n", "    if_fails: f\n    rule: s\n"), 10, "'rule'"),
        ("base: &b {x: 1}\n" + CONTRACT + "other:\n  <<: *b\n  y: 1\n  y: 2\n", 14, "'y'"),
    ],
)
def test_contract_with_a_repeated_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, key: str
) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ContractLoadError) as info:
        load_document(p)
    finding = info.value.finding
    assert (finding.rule, finding.line) == ("PV004", line) and f"duplicate key {key}" in finding.message
    assert run(["validate", str(p)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"{p}:{line}:") and "PV004" in out[0] and len(out) == 2


def test_contract_merge_override_is_not_a_repeat(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("base: &b {x: 1}\n" + CONTRACT + "other:\n  <<: *b\n  x: 2\n", encoding="utf-8")
    assert load_document(p).data["other"] == {"x": 2}


# --------------------------------------------------------------------------- --device-map


def test_device_map_naming_a_module_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = json.dumps({"model.layers.1": "cpu"})[:-1] + ', "model.layers.1": "disk"}'
    code = run(["trace", "--engine", "hf", "--tokens", "1,2", "--save-tensor", "embedding",
                "-o", str(tmp_path / "o"), "--device-map", value, "--dry-run"])
    assert code == 2
    assert "--device-map:1:" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()
