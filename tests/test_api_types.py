"""``pv`` as a typed package face: its names are ``pv.api``'s, and a type checker sees their types.

``pv/__init__.py`` only hands names on (``from pv.api import *``), so a client's
``pv.validate(...)`` has the return type ``pv.api`` declares; the lazy module
``__getattr__`` it replaced answered ``Any`` to every type checker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pv
from pv import api

REPO = Path(__file__).resolve().parents[1]

CLIENT = textwrap.dedent("""\
    from pathlib import Path

    import pv
    from pv.contract.validate import Report
    from pv.falsify.campaign import FalsifyReport
    from pv.report.gate import GateResult
    from pv.report.status import StatusReport

    report: Report = pv.validate(["contracts"], strict=True)
    errors: int = report.errors
    status: StatusReport = pv.status(contract="softmax-v1")
    share: float = status.functional_share
    verdict: GateResult = pv.gate(baseline="main")
    failed: bool = not verdict.ok
    run: FalsifyReport = pv.falsify_contracts("softmax-v1", evidence_dir=Path("evidence"), on_output=print)
    code: int = run.exit_code
    """)


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is in the [lint] extra")
    client = tmp_path / "client.py"
    client.write_text(source, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy"),
                           "--no-error-summary", str(client)], capture_output=True, text=True, cwd=tmp_path,
                          check=False)


def test_a_client_of_the_api_type_checks_strictly(tmp_path: Path) -> None:
    done = _mypy(tmp_path, CLIENT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_types_a_client_sees_are_real_not_any(tmp_path: Path) -> None:
    done = _mypy(tmp_path, CLIENT + "wrong: str = run.exit_code\nnothing = pv.validate(paths=3)\n")
    assert done.returncode == 1
    assert 'expression has type "int", variable has type "str"' in done.stdout
    assert 'Argument "paths" to "validate" has incompatible type "int"' in done.stdout


def test_pv_hands_on_exactly_the_names_pv_api_lists() -> None:
    assert pv.__all__ == ["ExitCode", "MissingExtraError", "PvError", "__version__", *api.__all__]
    for name in api.__all__:
        assert callable(getattr(pv, name)), name
    docs = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    for name in api.__all__:
        assert f"pv.{name}(" in docs, f"docs/api.md does not show pv.{name}"


def test_no_package_is_callable() -> None:
    """Entry points are plain functions: no package swaps its module class to answer a call."""
    import importlib
    import pkgutil
    import types

    import pv as package

    for info in pkgutil.walk_packages(package.__path__, "pv."):
        if info.ispkg:
            module = importlib.import_module(info.name)
            assert type(module) is types.ModuleType, info.name


def test_import_pv_runs_no_layer_and_nothing_heavy() -> None:
    code = ("import sys, pv; print(sorted(m for m in sys.modules if m.startswith('pv.') and m not in "
            "('pv.api', 'pv.errors', 'pv.version')) + sorted(m for m in ('torch', 'transformers', 'numpy', "
            "'jsonschema', 'pydantic', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_version_is_the_projects() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert pv.__version__ == project["version"]
