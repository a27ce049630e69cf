"""``pv falsify --contract ID|PATH`` or ``--all``: run bound tests, record evidence, promote."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pv.cli.options import (
    JSON,
    TEXT,
    contract_option,
    contracts_option,
    evidence_option,
    falsifiers_option,
    format_option,
)
from pv.errors import ExitCode

if TYPE_CHECKING:
    from pv.falsify.campaign import ContractRun
    from pv.falsify.run import Row

#: Row outcomes, in the order the summary counts them.
OUTCOMES = ("passed", "failed", "error", "skipped", "not run")


def _facts_text(facts: Mapping[str, Any], width: int = 60) -> str:
    keys = ("device", "dtype", "weights")
    parts = [f"{k}={facts[k]}" for k in keys if k in facts]
    parts += [f"{k}={facts[k]}" for k in sorted(facts) if k not in keys and k != "model_fingerprint"
              and isinstance(facts[k], (str, int, float, bool))]
    text = " ".join(parts) or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _contract_note(run: ContractRun) -> str:
    if not run.plan.update:
        return "contract left unchanged (--no-update)"
    result = run.result
    changed = any((r.old or "PROPOSED") != r.new for r in result.rows if r.new) or result.metadata_status
    return "contract updated" if changed else "statuses unchanged"


def _counts(rows: tuple[Row, ...] | list[Row]) -> str:
    return ", ".join(f"{sum(r.outcome == o for r in rows)} {'errored' if o == 'error' else o}"
                     for o in OUTCOMES if o in ("failed", "error") or any(r.outcome == o for r in rows))


def _print_table(run: ContractRun) -> None:
    result = run.result
    header = ("falsifier", "outcome", "facts", "status")
    table = [(r.falsifier_id,
              r.outcome + (" (live)" if r.live and r.has_requirements and r.outcome == "passed" else ""),
              _facts_text(r.facts),
              f"{r.old or '-'} -> {r.new or '-'}" + ("" if run.plan.update or r.old == r.new else " (not written)"))
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
    click.echo(f"{len(result.records)} evidence record(s) written; {_contract_note(run)}; {_counts(result.rows)}")


@click.command("falsify", context_settings={"ignore_unknown_options": True})
@contract_option(help="Contract id (metadata.id or file stem) or the path of a contract file.", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every contract under --contracts, one after another.")
@contracts_option(help="Folder (or file) of contracts defining falsifier ids [default: <repo>/contracts].")
@falsifiers_option()
@evidence_option(help="Where evidence records go [default: <repo>/evidence].")
@click.option("--no-update", is_flag=True, help="Record evidence but leave the contract's statuses alone.")
@click.option("--in-process", is_flag=True, help="Run pytest in this process instead of a subprocess.")
@format_option(TEXT, JSON)
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
    from pv.api import falsify_contracts

    report = falsify_contracts(contract_id, all=run_all, contracts_dir=contracts_dir, falsifiers_dir=falsifiers_dir,
                               evidence_dir=evidence_dir, update=not no_update, pytest_args=pytest_args,
                               in_process=in_process,
                               on_output=(lambda line: click.echo(line, err=True)) if fmt == JSON else click.echo,
                               on_contract=_print_table if fmt == TEXT else None)
    if junit_path is not None:
        from pv.report.junit import write_junit_suites

        write_junit_suites(junit_path, [(r.contract.id, r.result.rows, r.elapsed_s) for r in report.runs],
                           report.elapsed_s)
    if fmt == JSON:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif run_all:
        click.echo(f"\npv falsify --all: {len(report.runs)} contract(s), {len(report.rows)} falsifier(s): "
                   f"{_counts(report.rows)}; {len(report.records)} evidence record(s) written")
    return int(ExitCode.FINDINGS if report.exit_code else ExitCode.OK)
