"""Running one fuzz case and judging what came out: the property every reader must keep.

A case ends in one of three acceptable ways: a clean result (exit 0 or 1, or
a returned value), or an expected failure: exit 2 (or a ``PvError``) with
exactly one line of message. Anything else is a finding:

* ``internal``: ``pv: internal error``, a traceback, or an exception that is not a ``PvError``;
* ``multiline``: an expected failure whose message is not one line;
* ``hang``: still running after the case's time limit (``CASE_TIMEOUT``, SIGALRM);
* ``changed``: a file under a watched folder changed, appeared or vanished.

The same code serves the bounded pytest run (``tests/fuzz``) and the long
campaign (``benchmarks/fuzz.py``), so both judge by one rule.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.errors import PvError

OK, ERROR = "ok", "error"
INTERNAL, MULTILINE, HANG, CHANGED = "internal", "multiline", "hang", "changed"
FINDINGS = (INTERNAL, MULTILINE, HANG, CHANGED)

#: Seconds one case may run before it counts as a hang: generous, since a loaded two-core
#: box stretches a slow but finite case to seconds, while a FIFO blocks forever.
CASE_TIMEOUT = 30.0


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in pv swallows it."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok | error | internal | multiline | hang | changed
    detail: str = ""

    @property
    def finding(self) -> bool:
        return self.kind in FINDINGS


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (a blocked open() is interrupted too)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def scratch(name: str) -> tempfile.TemporaryDirectory[str]:
    """A case folder, in memory (``/dev/shm``) where there is one: folders are made by the thousand."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix=f"pv-fuzz-{name}-", dir=base)


def snapshot(*roots: Path) -> dict[str, Any]:
    """Every entry under ``roots`` (without following links): bytes, link target or kind."""
    out: dict[str, Any] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    out[str(p)] = p.read_bytes()
                else:
                    out[str(p)] = ("kind", stat.S_IFMT(st.st_mode))
    return out


@contextlib.contextmanager
def _collect_unraisable(found: list[str]) -> Iterator[None]:
    """Exceptions Python could not raise (``__del__``, GC callbacks) while pv ran.

    Python prints them to stderr, where they would read as a traceback; those
    raised in Hypothesis' own GC-timing callback (an alarm or a deep stack can
    land there) are the harness's, not pv's, and are left out.
    """

    def hook(info: Any) -> None:
        where = getattr(info.object, "__module__", "") or repr(info.object)
        if "hypothesis" in where or "gc_cumulative_time" in repr(info.object):
            return
        found.append(f"{type(info.exc_value).__name__}: {info.exc_value} in {info.object!r}")

    previous = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def judge_cli(code: int, err: str) -> Outcome:
    lines = err.splitlines()
    if "internal error" in err or "Traceback" in err:
        return Outcome(INTERNAL, lines[0] if lines else err)
    if code == 2:
        if len(lines) != 1:
            return Outcome(MULTILINE, f"{len(lines)} stderr lines: {err[:300]!r}")
        return Outcome(ERROR, lines[0])
    if code in (0, 1):
        return Outcome(OK, f"exit {code}")
    return Outcome(INTERNAL, f"unexpected exit code {code}: {err[:200]}")


def run_cli(args: list[str], *, watch: tuple[Path, ...] = (), timeout: float = CASE_TIMEOUT) -> Outcome:
    """``pv ARGS`` in-process (``pv.cli.run``), output captured, judged."""
    from pv.cli import run

    before = snapshot(*watch) if watch else None
    out, err = io.StringIO(), io.StringIO()
    unraisable: list[str] = []
    try:
        with time_limit(timeout), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                _collect_unraisable(unraisable):
            code = run(args)
    except Hang as exc:
        return Outcome(HANG, str(exc))
    except BaseException as exc:  # noqa: BLE001 - a crash out of run() is exactly a finding
        return Outcome(INTERNAL, f"{type(exc).__name__} escaped pv.cli.run: {exc}"[:300])
    if unraisable:
        return Outcome(INTERNAL, f"unraisable exception in pv code: {unraisable[0]}"[:300])
    outcome = judge_cli(code, err.getvalue())
    if before is not None and snapshot(*watch) != before:
        return Outcome(CHANGED, f"files changed under {', '.join(map(str, watch))}")
    return outcome


def run_library(call: Callable[[], Any], *, timeout: float = CASE_TIMEOUT) -> Outcome:
    """A library reader: a value or a one-line ``PvError`` is fine, anything else a finding."""
    try:
        with time_limit(timeout):
            call()
    except Hang as exc:
        return Outcome(HANG, str(exc))
    except PvError as exc:
        text = str(exc)
        if "\n" in text or "\r" in text:
            return Outcome(MULTILINE, repr(text[:300]))
        return Outcome(ERROR, text)
    except Exception as exc:  # noqa: BLE001 - an unexpected exception type is the finding
        return Outcome(INTERNAL, f"{type(exc).__name__}: {exc}"[:300])
    return Outcome(OK)
