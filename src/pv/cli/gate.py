"""``pv gate``: fail CI when a falsifier status regressed, outran its evidence, or rests on
evidence that was edited."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pv.errors import PvError


@click.command("gate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", default=None, metavar="GITREF|FILE",
              help="A git revision or a `pv status --format json` snapshot [default: merge base with main].")
@click.option("--strict", is_flag=True, help="Also fail on any stale backing record (a covered file changed).")
@click.option("--require-signed", is_flag=True,
              help="Only records signed with PV_EVIDENCE_KEY back a status (the key must be set).")
@click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None,
              help="Evidence folder [default: <repo>/evidence].")
@click.option("--falsifiers", "falsifiers_dir", type=click.Path(path_type=Path), default=None,
              help="Falsifier tests, for the binding check [default: <repo>/falsifiers if present].")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "github"]), default="text",
              show_default=True, help="sarif: a SARIF 2.1.0 log for code scanning; github: workflow annotations.")
def command(paths: tuple[Path, ...], baseline: str | None, strict: bool, require_signed: bool,
            evidence_dir: Path | None, falsifiers_dir: Path | None, fmt: str) -> int:
    """Compare statuses with a baseline and with the evidence; exit 1 naming each failure."""
    from pv.falsify.catalog import load_contracts
    from pv.falsify.records import KEY_ENV, key_from_env
    from pv.repo import repo_root
    from pv.report import gate, status

    root = repo_root()
    key = key_from_env()
    if require_signed and key is None:
        raise PvError(f"--require-signed needs the signing key in {KEY_ENV} to verify signatures")
    dirs = list(paths) or [root / "contracts"]
    contracts = load_contracts(dirs)
    evidence = (evidence_dir or root / "evidence").resolve()
    report = status.collect(contracts, evidence, root, key=key, require_signed=require_signed)
    if baseline is not None and Path(baseline).is_file():
        base: gate.Baseline | None = gate.baseline_from_file(Path(baseline))
    else:
        ref = baseline if baseline is not None else gate.default_ref(root)
        base = gate.baseline_from_git(root, ref, dirs, evidence) if ref is not None else None
    tests = (falsifiers_dir or root / "falsifiers").resolve()
    if falsifiers_dir is not None and not tests.is_dir():
        raise PvError(f"{falsifiers_dir}: no such falsifier folder")
    failures = gate.check(report, base, strict=strict, root=root, evidence_dir=evidence, contracts=contracts,
                          falsifiers_dir=tests if tests.is_dir() else None)
    label = base.label if base is not None else "none (no earlier commit)"
    if fmt == "sarif":
        from pv.report import annotations, sarif

        notes = annotations.from_gate_failures(failures, {c.id: str(c.path) for c in contracts})
        click.echo(json.dumps(sarif.sarif_log(notes, sarif.gate_rules()), indent=2, ensure_ascii=False))
        return 1 if failures else 0
    if fmt == "github":
        from pv.report import annotations

        notes = annotations.from_gate_failures(failures, {c.id: str(c.path) for c in contracts})
        for line in annotations.github(notes):
            click.echo(line)  # then the summary line below, as for text
    if fmt == "json":
        click.echo(json.dumps({"baseline": label, "strict": strict, "require_signed": require_signed,
                               "ok": not failures, "notes": list(base.notes) if base else [],
                               "failures": [f.__dict__ for f in failures]}, indent=2))
    else:
        for note in base.notes if base else ():
            click.echo(f"note: {note}")
        for f in failures if fmt == "text" else ():
            click.echo(f.format())
        n = sum(len(c.falsifiers) for c in report.contracts)
        verdict = f"FAILED ({len(failures)} problem(s))" if failures else "passed"
        mode = " (strict)" if strict else ""
        mode += " (signed records only)" if require_signed else ""
        click.echo(f"pv gate {verdict}: {n} falsifier(s) in {len(report.contracts)} contract(s) "
                   f"against baseline {label}{mode}")
    return 1 if failures else 0
