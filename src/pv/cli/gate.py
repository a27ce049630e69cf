"""``pv gate``: fail CI when a status regressed, outran its evidence or rests on edited evidence,
or when a claim was weakened unseen (``pv.report.gate`` decides; this prints)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.cli.options import (
    GITHUB,
    JSON,
    SARIF,
    TEXT,
    evidence_option,
    falsifiers_option,
    format_option,
    paths_argument,
)


@click.command("gate")
@paths_argument()
@click.option("--baseline", default=None, metavar="GITREF|FILE",
              help="A git revision or a `pv status --format json` snapshot [default: merge base with main].")
@click.option("--strict", is_flag=True, help="Also fail on any stale backing record (a covered file changed).")
@click.option("--require-signed", is_flag=True,
              help="Only records signed with PV_EVIDENCE_KEY back a status (the key must be set).")
@evidence_option()
@falsifiers_option(help="Falsifier tests, for the binding check [default: <repo>/falsifiers if present].")
@format_option(TEXT, JSON, SARIF, GITHUB,
               help="sarif: a SARIF 2.1.0 log for code scanning; github: workflow annotations.")
def command(paths: tuple[Path, ...], baseline: str | None, strict: bool, require_signed: bool,
            evidence_dir: Path | None, falsifiers_dir: Path | None, fmt: str) -> int:
    """Compare statuses with a baseline and with the evidence; exit 1 naming each failure."""
    from pv.api import gate

    result = gate(paths, baseline=baseline, strict=strict, require_signed=require_signed,
                  evidence_dir=evidence_dir, falsifiers_dir=falsifiers_dir)
    failures = result.failures
    if fmt in (SARIF, GITHUB):
        from pv.report import annotations

        notes = annotations.from_gate_failures(failures, result.contracts)
        if fmt == SARIF:
            from pv.report import sarif

            click.echo(json.dumps(sarif.sarif_log(notes, sarif.gate_rules()), indent=2, ensure_ascii=False))
            return 1 if failures else 0
        for line in annotations.github(notes):
            click.echo(line)  # then the summary line below, as for text
    if fmt == JSON:
        click.echo(json.dumps(result.to_json(), indent=2))
        return 1 if failures else 0
    for note in result.notes:
        click.echo(f"note: {note}")
    for f in failures if fmt == TEXT else ():
        click.echo(f.format())
    n = sum(len(c.falsifiers) for c in result.report.contracts)
    verdict = f"FAILED ({len(failures)} problem(s))" if failures else "passed"
    mode = " (strict)" if strict else ""
    mode += " (signed records only)" if require_signed else ""
    click.echo(f"pv gate {verdict}: {n} falsifier(s) in {len(result.report.contracts)} contract(s) "
               f"against baseline {result.baseline}{mode}")
    return 1 if failures else 0
