"""One ``pv falsify`` call: which contracts it runs, from which folders, one after another.

``run.falsify`` runs one contract's falsifiers from a checked ``RunPlan``; this
turns what a user names (a contract id, file stem or path, or ``--all``, and the
folders, defaulting to the repository's) into plans, runs them in order and
returns every result as data: ``pv falsify`` and ``pv.falsify_contracts()`` are this one
function. Progress (pytest's own lines, which contract starts) goes to
``on_output`` when one is given, and each finished contract to ``on_contract``,
so a caller can show results as they come; nothing is printed here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import repo
from pv.contract.model import Contract, load_contracts, select
from pv.errors import ExitCode, PvError
from pv.falsify.run import FalsifyResult, Row, RunPlan, falsify
from pv.falsify.session import Echo

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ContractRun:
    """One contract's run: what was planned, what came of it, how long it took."""

    contract: Contract
    plan: RunPlan
    result: FalsifyResult
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        res = self.result
        return {"contract": self.contract.id, "updated": self.plan.update,
                "falsifiers": [row_json(r) for r in res.rows],
                "metadata_status": list(res.metadata_status) if res.metadata_status else None,
                "exit_code": res.exit_code}


@dataclass(frozen=True)
class FalsifyReport:
    """Every contract a ``pv falsify`` call ran, in order; ``skipped``: contracts ``--all`` passed
    over because they have no falsification_tests."""

    runs: tuple[ContractRun, ...]
    all: bool
    elapsed_s: float
    skipped: tuple[str, ...] = ()
    root: Path = Path(".")

    @property
    def exit_code(self) -> int:
        """1 when any falsifier failed or errored, else 0 (``pv falsify``'s exit status)."""
        return int(ExitCode.FINDINGS if any(r.result.exit_code for r in self.runs) else ExitCode.OK)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def rows(self) -> tuple[Row, ...]:
        return tuple(row for r in self.runs for row in r.result.rows)

    @property
    def records(self) -> tuple[Path, ...]:
        return tuple(p for r in self.runs for p in r.result.records)

    def to_json(self) -> dict[str, Any]:
        """One contract's report as ``pv falsify --format json`` prints it; under ``--all``,
        every contract's and the overall exit code."""
        reports = [r.to_json() for r in self.runs]
        worst = max(r.result.exit_code for r in self.runs)
        return {"contracts": reports, "exit_code": worst} if self.all else reports[0]


def row_json(r: Row) -> dict[str, Any]:
    return {"id": r.falsifier_id, "outcome": r.outcome, "reason": r.reason, "measured": dict(r.facts),
            "live": r.live, "why_not_live": r.not_live, "old": r.old, "new": r.new, "why": r.why,
            "record": str(r.record_path) if r.record_path else None}


def shown(path: Path, root: Path) -> str:
    """``path`` relative to the repository when it lies inside it, else as given."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _resolve(contracts_path: Path, chosen: str, explicit: bool) -> tuple[list[Contract], Contract, tuple[Path, ...]]:
    """Every contract (for the orphan check), the chosen one (an id, a file stem or a path), and
    the paths that define them all."""
    given = Path(chosen)
    as_file = given.is_file()
    if not contracts_path.exists() and not (as_file and not explicit):
        raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
    paths: tuple[Path, ...] = (contracts_path,) if contracts_path.exists() else ()
    contracts = load_contracts(list(paths))
    if not as_file:
        return contracts, select(contracts, chosen), paths
    target = given.resolve()
    found = next((c for c in contracts if c.path.resolve() == target), None)
    if found is not None:
        return contracts, found, paths
    extra = load_contracts([target])
    if not extra:
        raise PvError(f"{chosen}: not a contract (a binding registry?)")
    other = next((c for c in contracts if c.id == extra[0].id), None)
    if other is not None:
        raise PvError(f"contract id {extra[0].id} is defined twice: {other.path} and {given}")
    return [*contracts, extra[0]], extra[0], (*paths, target)


def falsify_contracts(contract: PathLike | None = None, *, all: bool = False,
                      contracts_dir: PathLike | None = None, falsifiers_dir: PathLike | None = None,
                      evidence_dir: PathLike | None = None, update: bool = True, pytest_args: Sequence[str] = (),
                      in_process: bool = False, on_output: Echo | None = None,
                      on_contract: Callable[[ContractRun], None] | None = None,
                      root: Path | None = None) -> FalsifyReport:
    """Run the falsifiers of ``contract`` (an id, a file stem or a path) or, with ``all``, of
    every contract under ``contracts_dir`` (default ``<repo>/contracts``), record evidence and
    promote what it supports. Raises ``PvError`` on trouble: nothing is recorded for the
    contract it stops at (under ``all``, the message names it and how many ran before).
    ``pv.falsify_contracts`` is this function (``pv.api`` hands it on)."""
    run_all = all
    if run_all == (contract is not None):
        raise PvError("pv falsify takes --contract ID|PATH or --all: one of them, not both")
    root = root or repo.repo_root()
    echo: Echo = on_output or (lambda line: None)
    contracts_path = (Path(contracts_dir) if contracts_dir is not None else root / "contracts").resolve()
    if run_all:
        if not contracts_path.exists():
            raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
        paths: tuple[Path, ...] = (contracts_path,)
        chosen = sorted(load_contracts([contracts_path]), key=lambda c: c.id)
    else:
        _, one, paths = _resolve(contracts_path, os.fspath(contract or ""), contracts_dir is not None)
        chosen = [one]
    done: list[ContractRun] = []
    skipped: list[str] = []
    started_all = time.monotonic()
    for c in chosen:
        if run_all and not c.falsifiers:
            echo(f"pv falsify: {c.id} has no falsification_tests; nothing to run")
            skipped.append(c.id)
            continue
        plan = RunPlan(contract=c, contract_paths=paths,
                       falsifiers_dir=Path(falsifiers_dir or root / "falsifiers").resolve(), root=root,
                       evidence_dir=Path(evidence_dir or root / "evidence").resolve(), update=update,
                       pytest_args=tuple(a for a in pytest_args if a != "--"), in_process=in_process)
        echo(f"pv falsify: {c.id} ({len(c.falsifiers)} falsifiers) from {shown(c.path, root)}")
        started = time.monotonic()
        try:
            result = falsify(plan, echo=echo)
        except PvError as exc:
            if not run_all:
                raise
            raise PvError(f"{c.id}: {exc}" + (f" (stopped; {len(done)} contract(s) before it ran)" if done else "")) \
                from None
        run = ContractRun(c, plan, result, time.monotonic() - started)
        done.append(run)
        if on_contract is not None:
            on_contract(run)
    if not done:
        raise PvError(f"no contract under {shown(contracts_path, root)} has falsification_tests to run")
    return FalsifyReport(tuple(done), run_all, time.monotonic() - started_all, tuple(skipped), root)


__all__ = ["ContractRun", "FalsifyReport", "falsify_contracts", "row_json", "shown"]
