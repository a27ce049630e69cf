"""``pv scaffold``: a falsifier test skeleton for each falsifier that no test binds yet.

Each skeleton is a pytest function with the ``falsifies`` marker that takes the
``falsifier_record`` fixture, the falsifier's prediction as its docstring (with
the rule and what a failure would mean), comments showing how to hand pv what
the test computed (``falsifier_record.observe``: only measured facts meet
``live_requirements``) and a body that fails until someone writes the test: a
scaffold never passes, so it can never promote a status by itself. Skeletons are
appended to the contract's test file (``skeleton_file_name``; created if needed),
never replacing a function that exists; the ``test:`` lines to add to the
contract are returned for the user.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.contract.coverage import MarkedTest, contract_coverage, marked_tests
from pv.contract.discover import find_contracts
from pv.contract.graph import load_set
from pv.contract.load import Document
from pv.contract.modeline import schema_hint
from pv.contract.rulebase import falsifiers
from pv.errors import PvError
from pv.repo import repo_root


@dataclass(frozen=True)
class Skeleton:
    falsifier: str
    function: str

    def node_id(self, test_file: str) -> str:
        return f"{test_file}::{self.function}"


def skeleton_file_name(contract_id: str) -> str:
    """``softmax-v1`` -> ``test_softmax_v1.py``: the contract id as a Python module name
    (lowercase; every character but a letter or digit becomes ``_``), so the file imports
    under any pytest import mode and passes linters' module-name checks."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in contract_id.lower())[:100]
    return f"test_{safe}.py"


def function_name(fid: str) -> str:
    """``FALSIFY-ATTN-SUB-001`` -> ``test_falsify_attn_sub_001``."""
    name = re.sub(r"\W+", "_", fid.lower()).strip("_")
    return f"test_{name}" if not name.startswith("test") else name


def _docstring(test: dict[str, object]) -> str:
    def text(key: str) -> str:
        value = test.get(key)
        return " ".join(str(value).split()) if isinstance(value, str) and value.strip() else ""

    parts = [text("prediction") or "(no prediction written)"]
    if text("rule"):
        parts.append(f"Rule: {text('rule')}")
    if text("if_fails"):
        parts.append(f"If this fails: {text('if_fails')}")
    body = "\n\n".join(textwrap.fill(p, 88, break_long_words=False) for p in parts)
    # Text from a contract may hold control characters or lone surrogates (YAML
    # escapes allow both); neither may appear in Python source written as UTF-8.
    body = "".join(c if c >= " " or c == "\n" else f"\\x{ord(c):02x}" for c in body)
    body = body.encode("utf-8", "backslashreplace").decode("utf-8")
    return body.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


#: How to hand pv what the test computed; commented out, so the skeleton still fails.
_HOW_TO = """\
    # Compute what the prediction is about, hand pv what you computed, then assert:
    #     out = engine(inputs)                  # a torch tensor, a numpy array or a capture
    #     falsifier_record.observe(out)         # pv measures device and dtype from it
    #     falsifier_record.model(loaded)        # and the weights: sha256, real or synthetic
    #     falsifier_record.metric("max_abs_error", err)
    #     assert err <= tolerance, "the prediction fails"
"""


def _requirements(test: dict[str, object]) -> str:
    reqs = test.get("live_requirements")
    if not isinstance(reqs, dict) or not reqs:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in reqs.items())
    shown = "".join(max(c, " ") for c in shown).encode("utf-8", "backslashreplace").decode("utf-8")
    return (f"    # live_requirements: {shown[:200]}: met only by facts pv measured from what the\n"
            "    # test handed it (declared facts such as falsifier_record.device() never count).\n")


def render(fid: str, test: dict[str, object]) -> str:
    doc = textwrap.indent(_docstring(test), "    ")
    return (f'\n\n\n@pytest.mark.falsifies({fid!r})\n'
            f"def {function_name(fid)}(falsifier_record: FalsifierRecord) -> None:\n"
            f'    """\n{doc}\n    """\n'
            f"{_HOW_TO}{_requirements(test)}"
            f"    pytest.fail({('not written yet: try to refute the prediction of ' + fid)!r})\n")


def _imports_record(tree: ast.Module | None, text: str) -> bool:
    """Whether a test file already imports ``FalsifierRecord`` (for the skeletons' annotation)."""
    if tree is None:
        return "FalsifierRecord" in text
    return any(isinstance(n, ast.ImportFrom) and any(a.name == "FalsifierRecord" and a.asname is None
                                                      for a in n.names)
               for n in ast.walk(tree))


def _existing(test_file: Path) -> str:
    """The test file's text ("" when there is none yet); it is appended to, so it must be UTF-8."""
    if not test_file.exists():
        return ""
    try:
        return files.read_regular(test_file, files.MAX_SOURCE_BYTES).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise PvError(f"{test_file}: cannot add skeletons: {exc}") from None


def scaffold(doc: Document, test_file: Path, tests: list[MarkedTest]) -> list[Skeleton]:
    """Append skeletons for ``doc``'s unbound falsifiers to ``test_file``; return what was added."""
    report = contract_coverage(doc, tests)
    unbound = {fid for fid, _ in report.untested}
    existing = _existing(test_file)
    defined: set[str] = set()
    tree: ast.Module | None = None
    if existing:
        try:
            tree = ast.parse(existing)
            defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        except SyntaxError:
            defined = set(re.findall(r"def (\w+)\(", existing))
    added: list[Skeleton] = []
    chunks: list[str] = []
    for _, test in falsifiers(doc):
        fid = test.get("id")
        if not isinstance(fid, str) or fid not in unbound or function_name(fid) in defined:
            continue
        chunks.append(render(fid, test))
        added.append(Skeleton(fid, function_name(fid)))
    if not chunks:
        return []
    head = existing.rstrip("\n") if existing else (
        f'"""Falsifier tests of contract {doc.contract_id} ({doc.path.name}).\n\n'
        "Scaffolded by pv scaffold: each test fails until it is written.\n"
        '"""\n\nfrom __future__ import annotations\n\nimport pytest\n\n'
        "from pv.falsify.plugin import FalsifierRecord")
    if existing and not re.search(r"^import pytest", existing, re.MULTILINE):
        head += "\n\nimport pytest"  # after the file's own imports (and any __future__ one)
    if existing and not _imports_record(tree, existing):
        head += "\n\nfrom pv.falsify.plugin import FalsifierRecord"
    test_file.parent.mkdir(parents=True, exist_ok=True)
    files.replace_text(test_file, head + "".join(chunks))
    return added


@dataclass(frozen=True)
class Scaffolded:
    """What ``pv scaffold`` did for one contract: the skeletons added to ``test_file`` (empty when
    every falsifier already has a bound test), the ``test:`` entry each needs, and a hint when
    the contract's modeline does not lead editors to the schema."""

    contract_id: str
    contract_path: Path
    test_file: Path
    #: ``test_file`` as a node id names it: relative to the repository, with '/'.
    test_file_shown: str
    added: tuple[Skeleton, ...]
    hint: str | None = None

    @property
    def test_entries(self) -> tuple[tuple[str, str], ...]:
        """(falsifier id, node id) for each skeleton: what its ``test:`` should name."""
        return tuple((s.falsifier, s.node_id(self.test_file_shown)) for s in self.added)

    def to_json(self) -> dict[str, Any]:
        return {"contract": self.contract_id, "file": str(self.contract_path), "test_file": self.test_file_shown,
                "added": [{"falsifier": f, "test": node} for f, node in self.test_entries], "hint": self.hint}


def scaffold_contract(contract: str, *, contracts_dir: Path | None = None, tests_dir: Path | None = None,
                      output: Path | None = None, root: Path | None = None) -> Scaffolded:
    """``pv scaffold``: skeletons for the unbound falsifiers of ``contract`` (an id, a file stem or
    a path), appended to ``output`` (default ``<tests>/test_<contract id>.py``, ``<tests>``
    defaulting to ``<repo>/falsifiers``)."""
    root = root or repo_root()
    given = Path(contract)
    candidates = [given] if given.is_file() else find_contracts([contracts_dir or root / "contracts"])
    docs, _ = load_set(candidates)
    matches = [d for d in docs if given.is_file() or contract in (d.contract_id, d.stem)]
    if not matches:
        raise PvError(f"{contract}: no such contract (give an id, a file stem or a path)")
    doc = matches[0]
    folder = tests_dir or root / "falsifiers"
    target = output or folder / skeleton_file_name(doc.contract_id)
    tests = marked_tests([folder], root) if folder.is_dir() else []
    added = scaffold(doc, target, tests)
    shown = Path(os.path.relpath(target, root)).as_posix()
    return Scaffolded(doc.contract_id, doc.path, target, shown, tuple(added),
                      schema_hint(doc.path, root) if added else None)
