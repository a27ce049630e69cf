"""``pv validate PATH...``: check contracts, print located findings, exit 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.cli.options import GITHUB, JSON, SARIF, TEXT, evidence_option, format_option, paths_argument
from pv.errors import ExitCode


@click.command("validate")
@paths_argument(required=True)
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
@format_option(TEXT, JSON, SARIF, GITHUB,
               help="Findings as lines, one JSON object, a SARIF 2.1.0 log (code scanning) or "
                    "GitHub workflow annotations.")
@click.option("--fix", is_flag=True,
              help="First rename status keys pv does not read (PV025) to 'status', in place "
                   "(under the contract's lock in --evidence, as pv falsify takes it).")
@evidence_option(help="Evidence folder holding the contracts' locks, for --fix [default: <repo>/evidence].")
@click.option("--check-evidence/--no-check-evidence", default=None,
              help="Check that algorithm_evidence files exist and cite defined functions "
                   "[default: on inside a git checkout].")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
              help="Worker processes for many files [default: one per core].")
def command(paths: tuple[Path, ...], strict: bool, fmt: str, fix: bool, evidence_dir: Path | None,
            check_evidence: bool | None, jobs: int | None) -> int:
    """Check contracts (files, or directories searched for *.yaml/*.yml).

    Prints one line per finding, FILE:LINE:COL: error|warning RULE: MESSAGE, then a
    summary. Exit 0 when there are no errors, 1 when there are, 2 on a usage error.
    """
    from pv.api import validate

    report = validate(paths, strict=strict, check_evidence=check_evidence, jobs=jobs, fix=fix,
                      evidence_dir=evidence_dir)
    for done in report.fixes:
        click.echo(done.format(), err=fmt != TEXT)
    if fmt == JSON:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif fmt in (SARIF, GITHUB):
        from pv.report import annotations, sarif

        notes = annotations.from_findings(report.findings)
        if fmt == SARIF:
            click.echo(json.dumps(sarif.sarif_log(notes, sarif.validation_rules()), indent=2,
                                  ensure_ascii=False))
        else:
            for line in annotations.github(notes):
                click.echo(line)
            click.echo(report.summary())
    else:
        for finding in report.findings:
            click.echo(finding.format())
        click.echo(report.summary())
    return int(ExitCode.OK if report.ok else ExitCode.FINDINGS)
