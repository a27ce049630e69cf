"""Fuzz targets over repository data: contracts, evidence records, gate baselines."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from . import harness
from .files import place
from .strategies import document, encode_any, expand, mutate_text
from .targets import REPO

# --------------------------------------------------------------------------- contracts

_MINIMAL_CONTRACT = """\
metadata:
  id: fuzz-minimal-v1
  version: 1.0.0
  status: PROPOSED
  description: A minimal contract for fuzzing.
"""


@functools.lru_cache(maxsize=1)
def contract_base() -> str:
    paths = sorted((REPO / "contracts").glob("*.yaml"))
    return paths[0].read_text(encoding="utf-8") if paths else _MINIMAL_CONTRACT


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _contract_yaml(doc: Any) -> bytes:
    try:
        text = yaml.dump(doc, Dumper=_DUMPER, allow_unicode=True, sort_keys=False, width=100)
    except UnicodeEncodeError:  # libyaml's emitter refuses lone surrogates; Python's escapes them
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
    except yaml.YAMLError:
        text = json.dumps(doc)
    return encode_any(expand(text))


#: Just under the contract loader's 2 MiB bound: the size the "under 1 s" target is about.
BIG_CONTRACT_BYTES = 2 * 1024 * 1024 - 64 * 1024


@functools.lru_cache(maxsize=1)
def big_contract() -> str:
    """The shipped contract with its lists repeated until it is just under the size bound."""
    doc = yaml.safe_load(contract_base())
    lists = [k for k, v in doc.items() if isinstance(v, list) and v]
    one = len(_contract_yaml(doc))
    factor = max(1, BIG_CONTRACT_BYTES // max(one, 1))
    for _ in range(8):
        # fresh copies: repeated objects would be dumped as YAML aliases, not text
        grown = {k: ([copy.deepcopy(x) for _ in range(factor) for x in v] if k in lists else v)
                 for k, v in doc.items()}
        text = _contract_yaml(grown).decode("utf-8")
        if len(text.encode()) <= BIG_CONTRACT_BYTES:
            return text
        factor = max(1, factor * 9 // 10)
    return text


@st.composite
def contract_cases(draw: st.DrawFn) -> tuple[str, bytes | str]:
    how = draw(st.sampled_from(["data", "text", "text", "kind"] * 5 + ["big"]))
    base_text = big_contract() if how == "big" else contract_base()
    if how in ("text", "big"):
        return how, encode_any(expand(draw(mutate_text(base_text, max_ops=4))))
    return draw(document(yaml.safe_load(base_text), _contract_yaml))


def run_contract(case: tuple[str, bytes | str], workdir: Path) -> harness.Outcome:
    path = workdir / "contracts" / "fuzzed.yaml"
    place(path, case[1])
    return harness.run_cli(["validate", "--format", "json", str(path)], watch=(path.parent,))


# --------------------------------------------------------------------------- evidence records


@functools.lru_cache(maxsize=1)
def evidence_base() -> tuple[str, str, dict[str, Any]]:
    """(contract id, falsifier id, record) of the newest committed record, or a small stand-in."""
    records = sorted((REPO / "evidence").glob("*/*/*.json"))
    if records:
        path = records[-1]
        return path.parent.parent.name, path.parent.name, json.loads(path.read_text())
    return "fuzz-minimal-v1", "FALSIFY-FUZZ-001", {"pv_evidence": 1, "outcome": "passed"}


def evidence_cases() -> st.SearchStrategy[Any]:
    _, _, record = evidence_base()
    return st.tuples(document(record), st.sampled_from(["library", "status"]))


def _read_record() -> Any:
    try:
        from pv.falsify.store import read_record
    except ImportError:  # before the record store was split from the record format
        from pv.falsify.records import read_record  # type: ignore[no-redef, attr-defined]
    return read_record


def run_evidence(case: tuple[tuple[str, bytes | str], str], workdir: Path) -> harness.Outcome:
    (_, content), how = case
    cid, fid, _ = evidence_base()
    evidence = workdir / "evidence"
    record = evidence / cid / fid / "20260101T000000.000000Z-fuzz-1-00000000.json"
    place(record, content)
    if how == "library":
        read_record = _read_record()
        before = harness.snapshot(evidence)
        outcome = harness.run_library(lambda: read_record(record))
        if harness.snapshot(evidence) != before:
            return harness.Outcome(harness.CHANGED, "evidence changed while read")
        return outcome
    contracts = sorted((REPO / "contracts").glob("*.yaml"))
    return harness.run_cli(
        ["status", "--evidence", str(evidence), "--format", "json", *map(str, contracts)],
        watch=(evidence,),
    )


# --------------------------------------------------------------------------- gate baselines


@functools.lru_cache(maxsize=1)
def baseline_base() -> dict[str, Any]:
    """``pv status --format json`` of the repository as it is: a real gate baseline."""
    from pv.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run(["status", "--format", "json"])
    if code == 0:
        try:
            data: dict[str, Any] = json.loads(out.getvalue())
            return data
        except json.JSONDecodeError:
            pass
    return {"kind": "pv-status", "version": 1, "contracts": []}


def baseline_cases() -> st.SearchStrategy[Any]:
    # The reader alone for most cases; the whole ``pv gate`` (which also reads every
    # committed record, ~0.1 s) for one in four.
    return st.tuples(document(baseline_base()), st.sampled_from(["library"] * 3 + ["gate"]))


def run_baseline(case: tuple[tuple[str, bytes | str], str], workdir: Path) -> harness.Outcome:
    (_, content), how = case
    path = workdir / "baseline" / "status.json"
    place(path, content)
    if how == "library":
        from pv.report.baseline import from_file

        before = harness.snapshot(path.parent)
        outcome = harness.run_library(lambda: from_file(path))
        if harness.snapshot(path.parent) != before:
            return harness.Outcome(harness.CHANGED, "baseline folder changed while read")
        return outcome
    return harness.run_cli(["gate", "--baseline", str(path)], watch=(path.parent,))
