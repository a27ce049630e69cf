"""``pv validate PATH...``: check contracts, print located findings, exit 0/1/2."""

from __future__ import annotations

import json

import click

from pv.errors import ExitCode


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Findings as lines or as one JSON object.")
@click.option("--check-evidence/--no-check-evidence", default=None,
              help="Check that algorithm_evidence files exist and cite defined functions "
                   "[default: on inside a git checkout].")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
              help="Worker processes for many files [default: one per core].")
def command(paths: tuple[str, ...], strict: bool, fmt: str, check_evidence: bool | None,
            jobs: int | None) -> int:
    """Check contracts (files, or directories searched for *.yaml/*.yml).

    Prints one line per finding, FILE:LINE:COL: error|warning RULE: MESSAGE, then a
    summary. Exit 0 when there are no errors, 1 when there are, 2 on a usage error.
    """
    from pv.contract.validate import validate_paths

    report = validate_paths(paths, strict=strict, check_evidence=check_evidence, jobs=jobs)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        for finding in report.findings:
            click.echo(finding.format())
        click.echo(report.summary())
    return int(ExitCode.OK if report.ok else ExitCode.FINDINGS)
