"""``pv gate``: fail CI when a falsifier status regressed or outran its evidence."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("gate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", default=None, metavar="GITREF|FILE",
              help="A git revision or a `pv status --format json` snapshot [default: merge base with main].")
@click.option("--strict", is_flag=True, help="Also fail on stale evidence (a hashed file changed).")
@click.option("--evidence", "evidence_dir", type=click.Path(path_type=Path), default=None,
              help="Evidence folder [default: <repo>/evidence].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(paths: tuple[Path, ...], baseline: str | None, strict: bool, evidence_dir: Path | None,
            fmt: str) -> int:
    """Compare statuses with a baseline and with the evidence; exit 1 naming each failure."""
    from pv.falsify.catalog import load_contracts
    from pv.repo import repo_root
    from pv.report import gate, status

    root = repo_root()
    dirs = list(paths) or [root / "contracts"]
    contracts = load_contracts(dirs)
    report = status.collect(contracts, (evidence_dir or root / "evidence").resolve(), root)
    if baseline is not None and Path(baseline).is_file():
        base: gate.Baseline | None = gate.baseline_from_file(Path(baseline))
    else:
        ref = baseline if baseline is not None else gate.default_ref(root)
        base = gate.baseline_from_git(root, ref, dirs) if ref is not None else None
    failures = gate.check(report, base, strict=strict)
    label = base.label if base is not None else "none (no earlier commit)"
    if fmt == "json":
        click.echo(json.dumps({"baseline": label, "strict": strict, "ok": not failures,
                               "notes": list(base.notes) if base else [],
                               "failures": [f.__dict__ for f in failures]}, indent=2))
    else:
        for note in base.notes if base else ():
            click.echo(f"note: {note}")
        for f in failures:
            click.echo(f.format())
        n = sum(len(c.falsifiers) for c in report.contracts)
        verdict = f"FAILED ({len(failures)} problem(s))" if failures else "passed"
        click.echo(f"pv gate {verdict}: {n} falsifier(s) in {len(report.contracts)} contract(s) "
                   f"against baseline {label}{' (strict)' if strict else ''}")
    return 1 if failures else 0
