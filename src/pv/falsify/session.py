"""One pytest session for ``pv falsify``: run it, then read back what the plugin spooled.

pytest runs in a subprocess by default (a crashing test or a CUDA context cannot
take the caller down, and ``-n 2`` works), in-process on request. The plugin
(``pv.falsify.plugin``) leaves three kinds of file in the spool folder:

- ``collect-<worker>.json``: per collecting process, the binding and its problems;
- ``collecterror-<hash>.json``: per test file that could not be collected (an
  import or syntax error), its node id and pytest's own error line;
- ``result-<hash>.json``: per test, from the controller, its folded outcome and facts.

A file that cannot be collected explains the binding problems it causes (its
tests are missing), so it is reported first and alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.errors import PvError
from pv.falsify.plugin import PROGRESS_PREFIX

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Spool:
    """What one pytest session left behind."""

    #: Per collecting process: ``bound``, ``problems`` (binding errors), ``selected``.
    collected: tuple[dict[str, Any], ...]
    #: Per test: node id, falsifier ids, outcome, reason, facts, environment.
    results: tuple[dict[str, Any], ...]
    #: Per file that pytest could not collect: ``nodeid`` and ``error`` (one line).
    collect_errors: tuple[dict[str, Any], ...] = ()

    def trouble(self) -> str | None:
        """The one line ``pv falsify`` stops with before recording anything, or None.

        Collection errors come first and stand alone: an unbound falsifier whose
        test file failed to import is a symptom, not the problem.
        """
        if self.collect_errors:
            seen: dict[str, str] = {}
            for e in self.collect_errors:
                seen.setdefault(str(e.get("nodeid") or "."), str(e.get("error") or "no detail"))
            return "; ".join(f"{node} cannot be collected: {error}" for node, error in sorted(seen.items()))
        problems = sorted({str(m) for c in self.collected for m in c.get("problems", [])})
        return "; ".join(problems) if problems else None


def run_pytest(argv: list[str], cwd: Path, echo: Echo, *, in_process: bool = False) -> tuple[int, list[str]]:
    """pytest's exit code and the tail of its output (progress lines go to ``echo``)."""
    return _run_in_process(argv, cwd) if in_process else _run_subprocess(argv, cwd, echo)


def _run_subprocess(argv: list[str], cwd: Path, echo: Echo) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: deque[str] = deque(maxlen=60)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *argv], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
    except OSError as exc:
        raise PvError(f"cannot start pytest: {exc}") from None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            at = line.find(PROGRESS_PREFIX)  # may follow pytest's progress dots
            if at >= 0:
                echo(line[at + len(PROGRESS_PREFIX):])
            else:
                tail.append(line)
    finally:
        code = proc.wait()
    return code, list(tail)


def _run_in_process(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    import pytest

    here = os.getcwd()
    os.chdir(cwd)
    try:
        code = int(pytest.main(argv))
    finally:
        os.chdir(here)
    return code, []


#: A result file of one test (its facts and metrics): pv's own, yet read with a bound.
MAX_RESULT_BYTES = 16 << 20


def read_spool(spool: Path) -> Spool:
    """Everything the plugin wrote into ``spool``."""
    def load(pattern: str) -> tuple[dict[str, Any], ...]:
        out = []
        for p in sorted(spool.glob(pattern)):
            try:
                data = json.loads(files.read_regular(p, MAX_RESULT_BYTES).decode("utf-8"))
            except (OSError, ValueError) as exc:
                raise PvError(f"unreadable falsifier result {p.name}: {exc}") from None
            if not isinstance(data, dict):
                raise PvError(f"unreadable falsifier result {p.name}: not a JSON object")
            out.append(data)
        return tuple(out)
    return Spool(load("collect-*.json"), load("result-*.json"), load("collecterror-*.json"))


__all__ = ["Echo", "Spool", "read_spool", "run_pytest"]
