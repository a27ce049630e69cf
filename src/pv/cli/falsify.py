"""``pv falsify --contract ID|PATH`` or ``--all``: run bound tests, record evidence, promote."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pv.errors import ExitCode, PvError

if TYPE_CHECKING:
    from pv.contract.model import Contract
    from pv.falsify.run import FalsifyResult, Row, RunPlan

#: Row outcomes, in the order the summary counts them.
OUTCOMES = ("passed", "failed", "error", "skipped", "not run")


def _facts_text(facts: Mapping[str, Any], width: int = 60) -> str:
    keys = ("device", "dtype", "weights")
    parts = [f"{k}={facts[k]}" for k in keys if k in facts]
    parts += [f"{k}={facts[k]}" for k in sorted(facts) if k not in keys and k != "model_fingerprint"
              and isinstance(facts[k], (str, int, float, bool))]
    text = " ".join(parts) or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _contract_note(update: bool, result: FalsifyResult) -> str:
    if not update:
        return "contract left unchanged (--no-update)"
    changed = any((r.old or "PROPOSED") != r.new for r in result.rows if r.new) or result.metadata_status
    return "contract updated" if changed else "statuses unchanged"


def _counts(rows: tuple[Row, ...] | list[Row]) -> str:
    return ", ".join(f"{sum(r.outcome == o for r in rows)} {'errored' if o == 'error' else o}"
                     for o in OUTCOMES if o in ("failed", "error") or any(r.outcome == o for r in rows))


def _row_json(r: Row) -> dict[str, Any]:
    return {"id": r.falsifier_id, "outcome": r.outcome, "reason": r.reason, "measured": dict(r.facts),
            "live": r.live, "why_not_live": r.not_live, "old": r.old, "new": r.new, "why": r.why,
            "record": str(r.record_path) if r.record_path else None}


def _print_table(plan: RunPlan, result: FalsifyResult) -> None:
    header = ("falsifier", "outcome", "facts", "status")
    table = [(r.falsifier_id,
              r.outcome + (" (live)" if r.live and r.has_requirements and r.outcome == "passed" else ""),
              _facts_text(r.facts),
              f"{r.old or '-'} -> {r.new or '-'}" + ("" if plan.update or r.old == r.new else " (not written)"))
             for r in result.rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(3)]
    click.echo("")
    for row in [header, *table]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    for r in result.rows:
        if r.outcome in ("failed", "skipped") and r.reason:
            click.echo(f"{r.falsifier_id}: {r.outcome}: {r.reason}")
        elif r.why:
            click.echo(f"{r.falsifier_id}: status not moved: {r.why}")
        if r.not_live:
            click.echo(f"{r.falsifier_id}: not live: {r.not_live}")
    if result.metadata_status is not None:
        old, new = result.metadata_status
        click.echo(f"metadata.status: {old} -> {new} (the contract stands where its weakest falsifier stands)")
    click.echo(f"{len(result.records)} evidence record(s) written; "
               f"{_contract_note(plan.update, result)}; {_counts(result.rows)}")


def _resolve(contracts_path: Path, chosen: str, explicit: bool) -> tuple[list[Contract], Contract, tuple[Path, ...]]:
    """Every contract (for the orphan check), the chosen one (an id, a file stem or a path), and
    the paths that define them all."""
    from pv.contract.model import load_contracts, select

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


@click.command("falsify", context_settings={"ignore_unknown_options": True})
@click.option("--contract", "contract_id", default=None, metavar="ID|PATH",
              help="Contract id (metadata.id or file stem) or the path of a contract file.")
@click.option("--all", "run_all", is_flag=True, help="Run every contract under --contracts, one after another.")
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder (or file) of contracts defining falsifier ids [default: <repo>/contracts].")
@click.option("--falsifiers", "falsifiers_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of falsifier tests [default: <repo>/falsifiers].")
@click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None,
              help="Where evidence records go [default: <repo>/evidence].")
@click.option("--no-update", is_flag=True, help="Record evidence but leave the contract's statuses alone.")
@click.option("--in-process", is_flag=True, help="Run pytest in this process instead of a subprocess.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--junit", "junit_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="PATH", help="Also write the results as JUnit XML (one test case per falsifier).")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def command(contract_id: str | None, run_all: bool, contracts_dir: Path | None, falsifiers_dir: Path | None,
            evidence_dir: Path | None, no_update: bool, in_process: bool, fmt: str,
            junit_path: Path | None, pytest_args: tuple[str, ...]) -> int:
    """Run the falsifiers bound to a contract (or, with --all, to every contract) and promote
    what the evidence supports.

    Arguments after `--` go to pytest (e.g. `-- -n 2`). Exit 0 when every
    falsifier that ran passed (or skipped), 1 when any failed or errored, 2 on trouble.
    """
    from pv.falsify.run import RunPlan, falsify
    from pv.repo import repo_root

    if run_all == (contract_id is not None):
        raise PvError("pv falsify takes --contract ID|PATH or --all: one of them, not both")
    root = repo_root()
    contracts_path = (contracts_dir or root / "contracts").resolve()
    if run_all:
        from pv.contract.model import load_contracts

        if not contracts_path.exists():
            raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
        paths: tuple[Path, ...] = (contracts_path,)
        contracts = load_contracts([contracts_path])
        chosen = sorted(contracts, key=lambda c: c.id)
    else:
        assert contract_id is not None
        contracts, one, paths = _resolve(contracts_path, contract_id, contracts_dir is not None)
        chosen = [one]
    echo = (lambda line: click.echo(line, err=True)) if fmt == "json" else click.echo
    done: list[tuple[Contract, RunPlan, FalsifyResult, float]] = []
    started_all = time.monotonic()
    for contract in chosen:
        if run_all and not contract.falsifiers:
            echo(f"pv falsify: {contract.id} has no falsification_tests; nothing to run")
            continue
        plan = RunPlan(
            contract=contract, contract_paths=paths,
            falsifiers_dir=(falsifiers_dir or root / "falsifiers").resolve(), root=root,
            evidence_dir=(evidence_dir or root / "evidence").resolve(), update=not no_update,
            pytest_args=tuple(a for a in pytest_args if a != "--"), in_process=in_process,
        )
        echo(f"pv falsify: {contract.id} ({len(contract.falsifiers)} falsifiers) from {_shown(contract.path, root)}")
        started = time.monotonic()
        try:
            result = falsify(plan, echo=echo)
        except PvError as exc:
            if not run_all:
                raise
            raise PvError(f"{contract.id}: {exc}"
                          + (f" (stopped; {len(done)} contract(s) before it ran)" if done else "")) from None
        done.append((contract, plan, result, time.monotonic() - started))
        if fmt == "text":
            _print_table(plan, result)
    if not done:
        raise PvError(f"no contract under {_shown(contracts_path, root)} has falsification_tests to run")
    if junit_path is not None:
        from pv.report.junit import write_junit_suites

        write_junit_suites(junit_path, [(c.id, r.rows, s) for c, _, r, s in done], time.monotonic() - started_all)
    exit_code = max(r.exit_code for _, _, r, _ in done)
    if fmt == "json":
        reports = [{"contract": c.id, "updated": p.update, "falsifiers": [_row_json(r) for r in res.rows],
                    "metadata_status": list(res.metadata_status) if res.metadata_status else None,
                    "exit_code": res.exit_code} for c, p, res, _ in done]
        click.echo(json.dumps({"contracts": reports, "exit_code": exit_code} if run_all else reports[0], indent=2))
    elif run_all:
        rows = [row for _, _, r, _ in done for row in r.rows]
        records = sum(len(r.records) for _, _, r, _ in done)
        click.echo(f"\npv falsify --all: {len(done)} contract(s), {len(rows)} falsifier(s): {_counts(rows)}; "
                   f"{records} evidence record(s) written")
    return int(ExitCode.FINDINGS if exit_code else ExitCode.OK)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
