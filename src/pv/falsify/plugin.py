"""pytest plugin binding tests to contract falsifiers (loaded via the ``pytest11`` entry point).

It stays thin: hooks move data, the logic lives in ``binding``, ``promote`` and
``evidence``. In a plain ``pytest`` run it only registers the ``falsifies``
marker and the ``falsifier_record`` fixture. ``pv falsify`` adds options:

- ``--pv-contracts PATH`` (repeatable): the contracts that define falsifier ids;
  a marker naming an id none of them defines is an orphan.
- ``--pv-select CONTRACT_ID``: run only tests bound to that contract; its
  falsifiers without a test are unbound.
- ``--pv-spool DIR``: where results go. Each collecting process (every xdist
  worker) writes ``collect-<worker>.json``; the controller, which sees every
  worker's reports, writes one ``result-<hash>.json`` per test as it finishes.
  Facts travel inside the reports (``user_properties``), so remote workers work too.

On any orphan or unbound id every test is deselected (nothing runs) and the
problems are written to the spool for ``pv falsify`` to report. A test file that
cannot be collected (an import or syntax error) is written to the spool as
``collecterror-<worker>-<hash>.json``: its path and pytest's own error line.

A test **fails** only when its prediction fails: an ``AssertionError`` (or a
subclass) or ``pytest.fail`` in its call phase. Any other exception there, and any
exception in setup or teardown, makes its outcome ``error``: a broken test, which
refutes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pv.falsify.binding import FIXTURE_ABSENT_PREFIX, MARKER, BindingError, binding_for, check

_FACT = "pv:fact:"
_MEASURED = "pv:measured"
_ENVIRONMENT = "pv:environment"
_MEASURED_KEY = pytest.StashKey[dict[str, Any]]()
_METRIC = "pv:metric:"
_IDS = "pv:falsifies"
#: On a failed report whose exception is not a failed prediction: the phase it came from.
_ERROR = "pv:error"
#: Lines the runner echoes as progress while pytest runs in a subprocess.
PROGRESS_PREFIX = "[pv] "

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pv", "pv falsifiers")
    group.addoption("--pv-contracts", action="append", default=[], metavar="PATH",
                    help="contract files or folders defining falsifier ids (orphan check)")
    group.addoption("--pv-select", default=None, metavar="CONTRACT_ID",
                    help="run only the tests bound to this contract's falsifiers")
    group.addoption("--pv-spool", default=None, metavar="DIR",
                    help="write collection and per-test results here (used by pv falsify)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*ids): bind this test to contract falsifier ids such as FALSIFY-ATTN-SUB-001",
    )
    spool = config.getoption("--pv-spool", None)
    if spool:
        config.pluginmanager.register(_CollectErrorSpool(Path(spool)), "pv-collect-error-spool")
    if spool and getattr(config, "workerinput", None) is None:
        config.pluginmanager.register(_ResultSpool(config, Path(spool)), "pv-result-spool")


# --------------------------------------------------------------------------- the fixture


class FalsifierRecord:
    """What a falsifier test hands to its evidence record.

    - ``observe(obj)`` / ``capture(result)``: the plugin *measures* facts from a torch
      tensor, a numpy array, a capture (``TraceResult`` or folder) or a loaded model
      (see ``pv.falsify.facts``). Only measured facts meet ``live_requirements``.
    - ``model(loaded)``: the model's measured identity (weight-file sha256, real or synthetic).
    - ``fact(name, value)``: a *declared* fact, kept in the record for people, never
      matched against a requirement. ``device()``/``dtype()``/``weights()`` declare too.
    - ``metric(name, number)``: a number (NaN and inf are stored as null).
    """

    def __init__(self, item: pytest.Item) -> None:
        self._item = item
        self.measured: dict[str, Any] = {}
        self.declared: dict[str, Any] = {}
        self.metrics: dict[str, float | None] = {}

    def observe(self, *objects: Any) -> dict[str, Any]:
        """Measure facts from each object; returns what this call measured."""
        from pv.falsify import facts

        seen: dict[str, Any] = {}
        for obj in objects:
            for name, value in facts.observe(obj).items():
                facts.merge(seen, name, value)
                facts.merge(self.measured, name, value)
        self._item.stash[_MEASURED_KEY] = dict(self.measured)
        return seen

    capture = observe

    def model(self, loaded: Any, *, device: str | None = None, dtype: str | None = None) -> None:
        """Measure ``loaded``'s identity; ``device``/``dtype`` given here are only declared."""
        self.observe(loaded)
        if device is not None:
            self.device(device)
        if dtype is not None:
            self.dtype(dtype)
        self.fact("model_source", str(loaded.source))

    def fact(self, name: str, value: Any) -> None:
        from pv.falsify.facts import jsonable

        value = jsonable(value, name)
        self.declared[name] = value
        self._item.user_properties.append((_FACT + name, value))

    def metric(self, name: str, value: float | None) -> None:
        number = None if value is None else float(value)
        if number is not None and not math.isfinite(number):
            number = None  # JSON has no NaN; a missing number is honest
        self.metrics[name] = number
        self._item.user_properties.append((_METRIC + name, number))

    def device(self, device: str) -> None:
        self.fact("device", str(device))

    def dtype(self, dtype: str) -> None:
        self.fact("dtype", str(dtype).replace("torch.", ""))

    def weights(self, kind: str) -> None:
        if kind not in ("real", "synthetic"):
            raise ValueError(f"weights are 'real' or 'synthetic', not {kind!r}")
        self.fact("weights", kind)

    def fingerprint(self, digest: str) -> None:
        self.fact("model_fingerprint", str(digest))


@pytest.fixture
def falsifier_record(request: pytest.FixtureRequest) -> FalsifierRecord:
    """Record facts and metrics into the evidence of the falsifiers this test is bound to."""
    return FalsifierRecord(request.node)


def fixture_absent(reason: str) -> None:
    """Skip because this machine lacks a fixture (GPU, model file): maps to BLOCKER_FIXTURE_ABSENT."""
    pytest.skip(FIXTURE_ABSENT_PREFIX + reason)


# --------------------------------------------------------------------------- collection


def _known_ids(config: pytest.Config) -> tuple[set[str], list[str], dict[str, tuple[str, ...]]]:
    from pv.contract.model import load_contracts, select

    paths = [Path(p) for p in config.getoption("--pv-contracts")]
    contracts = load_contracts(paths)
    known = {f.id for c in contracts for f in c.falsifiers}
    named = {f.id: f.tests for c in contracts for f in c.falsifiers}
    chosen = config.getoption("--pv-select")
    selected = [f.id for f in select(contracts, chosen).falsifiers] if chosen else []
    return known, selected, named


def _worker_id(config: pytest.Config) -> str:
    winput = getattr(config, "workerinput", None)
    return str(winput.get("workerid", "worker")) if winput else "main"


def _ids_of(item: pytest.Item) -> tuple[str, ...]:
    try:
        return binding_for(item)
    except BindingError as exc:  # a usage error of the marker: one line, not a traceback
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)  # see every collected item, before -k/-m deselect any
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    spool = config.getoption("--pv-spool")
    if not config.getoption("--pv-contracts") and not config.getoption("--pv-select"):
        for item in items:  # binding still travels with reports in plain runs
            ids = _ids_of(item)
            if ids:
                item.user_properties.append((_IDS, list(ids)))
        return
    known, selected, named = _known_ids(config)
    bound: dict[str, list[str]] = {}
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        ids = _ids_of(item)
        for fid in ids:
            bound.setdefault(fid, []).append(item.nodeid)
        if ids:
            item.user_properties.append((_IDS, list(ids)))
        if ids and (not selected or set(ids) & set(selected)):
            keep.append(item)
        else:
            drop.append(item)
    report = check(bound, known, selected, named)
    if not report.ok:
        drop, keep = drop + keep, []
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if spool:
        payload = {"worker": _worker_id(config), "bound": bound, "problems": report.messages(),
                   "selected": [i.nodeid for i in keep]}
        _write_json(Path(spool) / f"collect-{_worker_id(config)}.json", payload)


# --------------------------------------------------------------------------- measuring


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Before a bound test's report is made, attach what was measured and the environment.

    The environment is read in the process that ran the test, after it ran (a test
    may change TF32 or determinism settings), and travels inside the report's
    ``user_properties``, so xdist workers on other machines report their own.
    """
    if item.get_closest_marker(MARKER) is not None and (call.when == "call" or call.excinfo is not None):
        from pv.falsify.facts import environment

        props = [p for p in item.user_properties if not (isinstance(p, tuple) and p[0] in (_MEASURED, _ENVIRONMENT))]
        props.append((_MEASURED, item.stash.get(_MEASURED_KEY, {})))
        props.append((_ENVIRONMENT, environment()))
        item.user_properties[:] = props
    report: pytest.TestReport = yield
    if item.get_closest_marker(MARKER) is not None and _broken(call):
        report.user_properties.append((_ERROR, call.when))
    return report


def _broken(call: pytest.CallInfo[None]) -> bool:
    """Whether a phase raised something other than a failed prediction or a skip.

    A prediction fails only by an assertion (``AssertionError`` and its subclasses, such
    as numpy.testing's) or ``pytest.fail`` (and ``pytest.xfail``) while the test itself
    runs; anything else, or anything raised in setup or teardown, is a broken test.
    """
    excinfo = call.excinfo
    if excinfo is None or excinfo.errisinstance(pytest.skip.Exception):
        return False
    return call.when != "call" or not excinfo.errisinstance((AssertionError, pytest.fail.Exception))


# --------------------------------------------------------------------------- collection errors

#: ``E   ModuleNotFoundError: No module named 'foo'``: an exception line in pytest's report.
_EXCEPTION_LINE = re.compile(r"^E\s+((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failed)\b.*)$")
_FILE_LINE = re.compile(r'^E\s+File "[^"]*", line (\d+)')


def error_line(text: str) -> str:
    """pytest's own line for an error it reported as text: the exception (with the line of a syntax
    error), else the first ``E`` line, else the first line of what pytest said."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    marked = [ln for ln in lines if ln.startswith("E ")]
    line = next((m.group(1).strip() for ln in marked if (m := _EXCEPTION_LINE.match(ln))), None)
    if line is not None:
        where = next((m.group(1) for ln in marked if (m := _FILE_LINE.match(ln))), None)
        line += f" (line {where})" if where else ""
    else:
        line = next((ln[1:].strip() for ln in marked if ln[1:].strip()), None) \
            or next((ln.strip() for ln in lines if ln.strip()), "no detail")
    return line[:300]


class _CollectErrorSpool:
    """In every collecting process (each xdist worker, and the controller, which is handed the
    workers' failed reports): spool a file that cannot be collected, so ``pv falsify`` names
    it rather than the unbound falsifiers it causes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.failed:
            return
        nodeid = report.nodeid or "."
        digest = hashlib.sha1(nodeid.encode("utf-8")).hexdigest()[:16]
        payload = {"nodeid": nodeid, "error": error_line(str(report.longrepr))}
        _write_json(self.folder / f"collecterror-{digest}.json", payload)


# --------------------------------------------------------------------------- results


def _reason(report: pytest.TestReport) -> str | None:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ")
    if longrepr is None:
        return None
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:500] if crash.message else None
    return error_line(str(longrepr)) if str(longrepr).strip() else None


def _properties(report: pytest.TestReport) -> Iterator[tuple[str, Any]]:
    for entry in report.user_properties:
        if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            yield entry[0], entry[1]


class _ResultSpool:
    """Controller-side: folds each test's phase reports into one result file."""

    def __init__(self, config: pytest.Config, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.partial: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.partial.setdefault(report.nodeid, {
            "nodeid": report.nodeid, "falsifiers": [], "outcome": "passed", "reason": None,
            "fixture_absent": False, "duration_s": 0.0, "measured": {}, "declared": {}, "metrics": {},
            "environment": {}})
        state["duration_s"] += float(getattr(report, "duration", 0.0) or 0.0)
        for name, value in _properties(report):
            if name == _IDS:
                state["falsifiers"] = list(value)
            elif name == _MEASURED and isinstance(value, dict):
                state["measured"] = dict(value)
            elif name == _ENVIRONMENT and isinstance(value, dict):
                state["environment"] = dict(value)
            elif name.startswith(_FACT):
                state["declared"][name[len(_FACT):]] = value
            elif name.startswith(_METRIC):
                state["metrics"][name[len(_METRIC):]] = value
        broke = report.failed or (report.skipped and hasattr(report, "wasxfail"))
        if state["outcome"] != "failed" and broke and any(name == _ERROR for name, _ in _properties(report)):
            if state["outcome"] != "error":  # the first error names the test's trouble
                state["outcome"], state["reason"] = "error", _reason(report) or f"error in {report.when}"
        elif state["outcome"] != "failed":
            if broke:
                state["outcome"] = "failed"
                state["reason"] = _reason(report) or f"expected failure: {getattr(report, 'wasxfail', '')}"
            elif report.skipped and state["outcome"] == "passed":
                reason = _reason(report) or "skipped"
                state["outcome"], state["reason"] = "skipped", reason
                state["fixture_absent"] = reason.startswith(FIXTURE_ABSENT_PREFIX)
        if report.when == "teardown":
            self._finish(self.partial.pop(report.nodeid))

    def _finish(self, result: dict[str, Any]) -> None:
        digest = hashlib.sha1(result["nodeid"].encode("utf-8")).hexdigest()[:16]
        _write_json(self.folder / f"result-{digest}.json", result)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            ids = ",".join(result["falsifiers"]) or "-"
            reason = f" ({result['reason']})" if result["reason"] else ""
            reporter.write_line(f"{PROGRESS_PREFIX}{ids}  {result['outcome']}  {result['nodeid']}  "
                                f"{result['duration_s']:.2f} s{reason}")


def _write_json(path: Path, payload: Any) -> None:
    from pv.files import replace_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_bytes(path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode("utf-8"))


__all__ = ["PROGRESS_PREFIX", "FalsifierRecord", "falsifier_record", "fixture_absent"]
