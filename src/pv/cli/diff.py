"""``pv diff A B``: compare two APRT files or capture directories stage by stage.

Exit 0 when every compared pair is within tolerance, 1 when any is not (or
could not be compared), 2 on trouble (unreadable input, nothing matched).
"""

from __future__ import annotations

import json
from typing import Any

import click

from pv.errors import ExitCode

FORMATS = ["text", "json"]

#: ``--format text|json``, shared by diff and bisect.
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False), default="text", show_default=True
)


def tolerance_options(func: Any) -> Any:
    """The flags ``pv diff`` and ``pv bisect`` share for tolerances and shapes."""
    options = [
        click.option(
            "--threshold",
            type=float,
            default=None,
            help="Minimum cosine for every stage (overrides the dtype default).",
        ),
        click.option(
            "--rtol",
            type=float,
            default=None,
            help="Relative tolerance: per-position RMS(d) <= atol + rtol*RMS(ref).",
        ),
        click.option("--atol", type=float, default=None, help="Absolute tolerance (see --rtol)."),
        click.option(
            "--config",
            "--tolerances",
            "config_file",
            # No click checks: the reader refuses folders, FIFOs and devices in one line.
            type=click.Path(),
            default=None,
            help="YAML/JSON tolerance file: cosine/rtol/atol, per-stage and per-dtype overrides.",
        ),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def build_tolerances(
    threshold: float | None, rtol: float | None, atol: float | None, config_file: str | None
) -> Any:
    from pv.compare.tolerances import Tolerances, load_config

    tols = load_config(config_file) if config_file else Tolerances()
    return tols.with_flags(cosine=threshold, rtol=rtol, atol=atol)


@click.command(name="diff")
@click.argument("a", type=click.Path(exists=False))
@click.argument("b", type=click.Path(exists=False))
@click.option(
    "--model",
    default=None,
    help="Model ('synthetic', HF dir, .gguf) whose config gives shapes when A/B have no manifest.",
)
@format_option
@click.option("--stages", default=None, help="Only these stages (comma-separated names or 'all').")
@click.option(
    "--top-k",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="How many largest |d| to report per stage.",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Details for every stage, not only failing ones."
)
@click.option(
    "--no-verify", "no_verify", is_flag=True,
    help="Compare files even when their bytes no longer have the digest their manifest records.",
)
@tolerance_options
def command(
    a: str,
    b: str,
    model: str | None,
    fmt: str,
    stages: str | None,
    top_k: int,
    verbose: bool,
    no_verify: bool,
    threshold: float | None,
    rtol: float | None,
    atol: float | None,
    config_file: str | None,
) -> int:
    """Compare A (engine under test) with B (reference): files or capture directories."""
    from pv import stages as stage_table
    from pv.compare.report import diff_text
    from pv.compare.sides import checked_diff

    tols = build_tolerances(threshold, rtol, atol, config_file)
    wanted = [s.name for s in stage_table.parse_stages(stages)] if stages else None
    config = None
    if model is not None:
        from pv.capture.model.load import model_config

        config = model_config(model)
    report = checked_diff(a, b, model=config, tolerances=tols, stages=wanted, top_k=top_k, verify=not no_verify)
    if fmt.lower() == "json":
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        click.echo(diff_text(report, verbose=verbose))
    return int(ExitCode.OK if report.ok else ExitCode.FINDINGS)
