"""The rooms of ``src/pv`` import downward only, and no module outgrows 400 lines (docs/architecture.md).

Imports are read with ``ast`` from every file, including the ones inside functions and
under ``TYPE_CHECKING``: a lazy import still ties two rooms together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PV = SRC / "pv"

#: From the bottom up: a module may import its own room and the rooms below it. "base" is
#: every top-level module but ``api`` (errors, files, safeyaml, digest, config, stages, ...);
#: ``pv/__init__.py`` only hands on ``api``'s names, so it sits with ``api``.
LAYERS = ("base", "contract", "capture", "compare", "falsify", "report", "api", "cli")

#: capture's own rooms: the file store and the models at the bottom; the runners
#: (and the importer) above them, never one another; capture's top-level modules
#: (tap, faults, runners, plan, trace, ...) may use store and model but reach the
#: runners only through the registry in ``runners.py``, by module name.
CAPTURE_BOTTOM = ("store", "model")
CAPTURE_RUNNERS = ("engine", "oracle", "llamacpp", "importer")

MAX_LINES = 400


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = sorted(PV.rglob("*.py"))
MODULES = {_module(p) for p in FILES}


def _target(name: str) -> str:
    """The longest prefix of ``name`` that is a module of pv (``pv.x.y.attr`` -> ``pv.x.y``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, pv module) for every import of pv in ``path``."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, _target(n)) for n in names if n == "pv" or n.startswith("pv.")]
    return found


def room(module: str) -> str:
    """``capture.store``, ``capture.tap``, ``compare``, ``base``, ``api``, ``cli``, ..."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "api":
        return "api"
    if f"pv.{parts[1]}" not in MODULES or not (PV / parts[1]).is_dir():
        return "base"
    if parts[1] == "capture" and len(parts) > 2:
        return f"capture.{parts[2]}"
    return parts[1]


def layer(module: str) -> int:
    return LAYERS.index(room(module).split(".")[0])


def problem(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target``, or None."""
    if layer(target) > layer(source):
        return f"{room(source).split('.')[0]} may not import {room(target).split('.')[0]}"
    a, b = room(source), room(target)
    if a == b or not (a.startswith("capture") and b.startswith("capture.")):
        return None
    inner, outer = a.partition(".")[2], b.partition(".")[2]
    if inner in CAPTURE_BOTTOM:
        return f"capture/{inner}/ may not import capture's {outer}"
    if outer in CAPTURE_RUNNERS and inner in CAPTURE_RUNNERS:
        return f"capture/{inner}/ may not import capture/{outer}/ (runners are reached through runners.py)"
    if outer in CAPTURE_RUNNERS and (not inner or (PV / "capture" / f"{inner}.py").is_file()):
        where = f"capture/{inner}.py" if inner else "capture/__init__.py"
        return f"{where} may not import capture/{outer}/ (only runners.py names it, by module name)"
    return None


def test_the_rooms_import_downward_only() -> None:
    bad = []
    for path in FILES:
        source = _module(path)
        for line, target in imports(path):
            why = problem(source, target)
            if why:
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {target}: {why}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("source", "target", "allowed"), [
    ("pv.report.gate", "pv.falsify.judge", True),
    ("pv.falsify.judge", "pv.report.status", False),
    ("pv.falsify.binding", "pv.contract.model", True),
    ("pv.contract.model", "pv.falsify.binding", False),
    ("pv.compare.diff", "pv.cli.diff", False),
    ("pv.stages", "pv.contract.load", False),
    ("pv.capture.engine.layers", "pv.capture.tap", True),
    ("pv.capture.engine.layers", "pv.capture.model.config", True),
    ("pv.capture.model.config", "pv.capture.tap", False),
    ("pv.capture.store.aprt", "pv.capture.model.config", False),
    ("pv.capture.oracle.runner", "pv.capture.engine.runner", False),
    ("pv.capture.trace", "pv.capture.engine.runner", False),
    ("pv.cli.trace", "pv.capture.engine.runner", True),
])
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    assert (problem(source, target) is None) == allowed


def test_relative_and_lazy_imports_are_seen() -> None:
    found = {t for _, t in imports(PV / "capture" / "runners.py")}
    assert "pv.stages" in found and "pv.capture.tap" in found  # from pv import stages; from pv.capture.tap
    assert "pv.capture.model.loaded" in found  # under TYPE_CHECKING


def test_no_module_outgrows_400_lines() -> None:
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in FILES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_architecture_page_cites_real_files() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`((?:src|tests|docs|scripts|schemas)/[A-Za-z0-9_./-]+)`", page))
    assert len(cited) > 20
    missing = sorted(c for c in cited if not (REPO / c.rstrip("/")).exists())
    assert not missing, missing
    for pkg in sorted(p for p in PV.iterdir() if (p / "__init__.py").is_file()):
        assert f"`src/pv/{pkg.name}/`" in page, pkg.name
    for pkg in sorted(p for p in (PV / "capture").iterdir() if (p / "__init__.py").is_file()):
        assert f"`src/pv/capture/{pkg.name}/`" in page, pkg.name
