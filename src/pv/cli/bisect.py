"""``pv bisect``: name the first stage where an engine under test leaves its reference.

This module parses and prints: the plan and its checks are
``pv.compare.bisect_plan``, the run (captures, walk, isolation, plot, report)
``pv.compare.bisect_run``, the tables ``pv.compare.report``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from pv.capture import runners
from pv.cli.diff import build_tolerances, format_option, tolerance_options
from pv.errors import ExitCode

if TYPE_CHECKING:
    from pv.compare.bisect_run import BisectRun


@click.command(name="bisect")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--model", default=None, help="'synthetic', a HF model directory or a .gguf file.")
@click.option("--tokens", default=None, help="Token ids for the captures, e.g. 1,2,3.")
@click.option("--prompt", default=None, help="Text for the captures (default: a fixed sentence).")
@click.option(
    "--inject-fault",
    "fault",
    default=None,
    metavar="NAME[@LAYER]",
    help="Catalogued bug injected into the engine under test.",
)
@click.option(
    "--engine",
    type=click.Choice(runners.names(), case_sensitive=False),
    default="pv",
    show_default=True,
    help="Engine under test (with --model): this project's engine, the oracle, or llama.cpp.",
)
@click.option(
    "--reference",
    type=click.Choice(runners.names(), case_sensitive=False),
    default="hf",
    show_default=True,
    help="Reference engine: the transformers oracle, a clean pv run, or a clean llama.cpp run.",
)
@click.option(
    "--isolate",
    is_flag=True,
    help="Rerun each layer from the reference input: local vs cumulative.",
)
@click.option(
    "--plot", default=None, metavar="FILE.png", help="Write a heatmap of layers x stages."
)
@click.option(
    "--plot-metric",
    "metric",
    type=click.Choice(["sqnr", "cosine"], case_sensitive=False),
    default="sqnr",
    show_default=True,
    help="What the heatmap shows.",
)
@click.option(
    "--report", default=None, metavar="FILE.md", help="Write a markdown summary (with the plot)."
)
@click.option(
    "--keep",
    default=None,
    metavar="DIR",
    help="Keep the two captures in DIR instead of a temp dir.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float32", "float16", "bfloat16"], case_sensitive=False),
)
@click.option(
    "--generate",
    default=0,
    type=click.IntRange(min=0),
    metavar="N",
    help="Two-level bisection over N generated tokens: first the step whose next token or "
    "logits leave tolerance, then the stage inside it (A B from pv trace --generate, or --model).",
)
@format_option
@click.option("--verbose", "-v", is_flag=True, help="Details for every stage.")
@click.option(
    "--no-verify", "no_verify", is_flag=True,
    help="Compare files even when their bytes no longer have the digest their manifest records.",
)
@tolerance_options
def command(
    a: str | None,
    b: str | None,
    model: str | None,
    tokens: str | None,
    prompt: str | None,
    fault: str | None,
    engine: str,
    reference: str,
    isolate: bool,
    plot: str | None,
    metric: str,
    report: str | None,
    keep: str | None,
    device: str,
    dtype: str,
    generate: int,
    fmt: str,
    verbose: bool,
    no_verify: bool,
    threshold: float | None,
    rtol: float | None,
    atol: float | None,
    config_file: str | None,
) -> int:
    """Name the first stage where A (under test) diverges from B (reference)."""
    from pv.api import bisect_run
    from pv.report.progress import Progress

    done = bisect_run(a, b, model=model, tokens=tokens, prompt=prompt, fault=fault, engine=engine,
                      reference=reference, isolate=isolate, plot=plot, metric=metric, report=report, keep=keep,
                      device=device, dtype=dtype, generate=generate, verify=not no_verify,
                      tolerances=build_tolerances(threshold, rtol, atol, config_file), progress=Progress)
    if fmt.lower() == "json":
        click.echo(json.dumps(done.to_dict(), indent=1))
    else:
        click.echo(run_text(done, verbose=verbose))
    return int(ExitCode.OK if done.ok else ExitCode.FINDINGS)


def run_text(done: BisectRun, *, verbose: bool = False) -> str:
    """What ``pv bisect`` prints: the context, the walk, isolation, the files written."""
    from pv.compare.report import bisect_text, generation_text, isolate_rows, table

    lines = [c.replace("`", "") for c in done.context]
    if done.generation is not None:
        return "\n".join(lines + generation_text(done.generation, verbose=verbose))
    assert done.result is not None
    lines += ([""] if lines else []) + [bisect_text(done.result, verbose=verbose)]
    if done.isolate is not None:
        headers, rows = isolate_rows(done.isolate)
        intro = done.isolate.introduced
        lines += ["", "local (each layer rerun from the reference input) vs cumulative error, layer output:",
                  table(rows, headers),
                  "bug introduced in layer(s): " + (", ".join(map(str, intro)) if intro
                                                    else "none (no layer fails on its own)")]
    for label, p in (("plot", done.plan.plot), ("report", done.plan.report)):
        if p is not None:
            lines.append(f"{label}: {p}")
    return "\n".join(lines)
