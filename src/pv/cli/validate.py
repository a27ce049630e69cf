"""``pv validate PATH...``: check contracts, print located findings, exit 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.errors import ExitCode

FORMATS = ["text", "json", "sarif", "github"]


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Findings as lines, one JSON object, a SARIF 2.1.0 log (code scanning) or "
                   "GitHub workflow annotations.")
@click.option("--fix", is_flag=True,
              help="First rename status keys pv does not read (PV025) to 'status', in place.")
@click.option("--check-evidence/--no-check-evidence", default=None,
              help="Check that algorithm_evidence files exist and cite defined functions "
                   "[default: on inside a git checkout].")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
              help="Worker processes for many files [default: one per core].")
def command(paths: tuple[str, ...], strict: bool, fmt: str, fix: bool,
            check_evidence: bool | None, jobs: int | None) -> int:
    """Check contracts (files, or directories searched for *.yaml/*.yml).

    Prints one line per finding, FILE:LINE:COL: error|warning RULE: MESSAGE, then a
    summary. Exit 0 when there are no errors, 1 when there are, 2 on a usage error.
    """
    from pv.api import validate

    if fix:
        from pv.contract.discover import find_contracts
        from pv.contract.fix import fix_file

        for path in find_contracts(paths):
            for done in fix_file(Path(path)):
                click.echo(done.format(), err=fmt != "text")
    report = validate(paths, strict=strict, check_evidence=check_evidence, jobs=jobs)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif fmt in ("sarif", "github"):
        from pv.report import annotations, sarif

        notes = annotations.from_findings(report.findings)
        if fmt == "sarif":
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
