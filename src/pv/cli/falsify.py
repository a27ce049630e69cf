"""``pv falsify --contract ID``: run the contract's bound tests, record evidence, promote."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pv.errors import PvError


def _facts_text(facts: Mapping[str, Any], width: int = 60) -> str:
    keys = ("device", "dtype", "weights")
    parts = [f"{k}={facts[k]}" for k in keys if k in facts]
    parts += [f"{k}={facts[k]}" for k in sorted(facts) if k not in keys and k != "model_fingerprint"
              and isinstance(facts[k], (str, int, float, bool))]
    text = " ".join(parts) or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _contract_note(update: bool, result: Any) -> str:
    if not update:
        return "contract left unchanged (--no-update)"
    changed = any((r.old or "PROPOSED") != r.new for r in result.rows if r.new) or result.metadata_status
    return "contract updated" if changed else "statuses unchanged"


@click.command("falsify", context_settings={"ignore_unknown_options": True})
@click.option("--contract", "contract_id", required=True, metavar="ID",
              help="Contract id (metadata.id or file stem).")
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
def command(contract_id: str, contracts_dir: Path | None, falsifiers_dir: Path | None,
            evidence_dir: Path | None, no_update: bool, in_process: bool, fmt: str,
            junit_path: Path | None, pytest_args: tuple[str, ...]) -> int:
    """Run the falsifiers bound to a contract and promote what the evidence supports.

    Arguments after `--` go to pytest (e.g. `-- -n 2`). Exit 0 when every
    falsifier that ran passed (or skipped), 1 when any failed, 2 on trouble.
    """
    from pv.falsify.catalog import load_contracts, select
    from pv.falsify.run import RunPlan, falsify
    from pv.repo import repo_root

    root = repo_root()
    contracts_path = (contracts_dir or root / "contracts").resolve()
    if not contracts_path.exists():
        raise PvError(f"{contracts_path}: no such contracts folder (use --contracts)")
    contracts = load_contracts([contracts_path])
    contract = select(contracts, contract_id)
    plan = RunPlan(
        contract=contract, contract_paths=(contracts_path,),
        falsifiers_dir=(falsifiers_dir or root / "falsifiers").resolve(), root=root,
        evidence_dir=(evidence_dir or root / "evidence").resolve(), update=not no_update,
        pytest_args=tuple(a for a in pytest_args if a != "--"), in_process=in_process,
    )
    echo = (lambda line: click.echo(line, err=True)) if fmt == "json" else click.echo
    try:
        shown = contract.path.resolve().relative_to(root)
    except ValueError:
        shown = contract.path
    echo(f"pv falsify: {contract.id} ({len(contract.falsifiers)} falsifiers) from {shown}")
    started = time.monotonic()
    result = falsify(plan, echo=echo)
    if junit_path is not None:
        from pv.report.junit import write_junit

        write_junit(junit_path, contract.id, result.rows, time.monotonic() - started)
    if fmt == "json":
        rows = [{"id": r.falsifier_id, "outcome": r.outcome, "reason": r.reason, "measured": dict(r.facts),
                 "live": r.live, "old": r.old, "new": r.new, "why": r.why,
                 "record": str(r.record_path) if r.record_path else None} for r in result.rows]
        meta = list(result.metadata_status) if result.metadata_status else None
        click.echo(json.dumps({"contract": contract.id, "updated": plan.update, "falsifiers": rows,
                               "metadata_status": meta,
                               "exit_code": result.exit_code}, indent=2))
        return result.exit_code
    header = ("falsifier", "outcome", "facts", "status")
    table = [(r.falsifier_id, r.outcome + (" (live)" if r.live and r.has_requirements and r.outcome == "passed" else ""), _facts_text(r.facts),
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
    if result.metadata_status is not None:
        old, new = result.metadata_status
        click.echo(f"metadata.status: {old} -> {new} (the contract stands where its weakest falsifier stands)")
    n_failed = sum(r.outcome == "failed" for r in result.rows)
    click.echo(f"{len(result.records)} evidence record(s) written; "
               f"{_contract_note(plan.update, result)}; "
               f"{n_failed} failed")
    return result.exit_code
