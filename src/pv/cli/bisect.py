"""``pv bisect``: name the first stage where an engine under test leaves its reference.

Two ways in: two capture directories (``pv bisect A B``), or a model
(``pv bisect --model M``), which captures both sides first into a temporary
directory: the engine under test is this project's engine (with
``--inject-fault``), the reference is the transformers oracle or, with
``--reference pv``, a clean run of the same engine. Every argument is checked
before any weight is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from pv.capture import runners
from pv.cli.diff import build_tolerances, format_option, tolerance_options
from pv.errors import ExitCode, PvError

#: Prompt used when --model is given without --tokens or --prompt.
DEFAULT_PROMPT = "The capital of France is Paris, and the capital of Italy is"


@dataclass(frozen=True)
class BisectPlan:
    a: Path | None
    b: Path | None
    model: str | None
    tokens: str | None
    prompt: str | None
    fault: str | None
    reference: str
    isolate: bool
    plot: Path | None
    metric: str
    report: Path | None
    keep: Path | None
    device: str
    dtype: str
    engine: str = "pv"
    generate: int = 0
    #: Files must still have the digests their manifests record (``--no-verify``: skip).
    verify: bool = True


def _check_out_file(path: str | None, suffix: str, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise PvError(f"{flag} {p}: the file name must end in {suffix}")
    if p.is_dir():
        raise PvError(f"{flag} {p}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PvError(f"{flag} {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PvError(f"{flag} {p}: directory {parent} is not writable")
    return p


def make_plan(
    a: str | None,
    b: str | None,
    *,
    model: str | None,
    tokens: str | None,
    prompt: str | None,
    fault: str | None,
    reference: str,
    isolate: bool,
    plot: str | None,
    metric: str,
    report: str | None,
    keep: str | None,
    device: str,
    dtype: str,
) -> BisectPlan:
    """Check the arguments' combination before anything runs."""
    if (a is None) != (b is None):
        raise PvError("give two capture directories A B, or --model to capture both sides")
    if a is None and model is None:
        raise PvError("give two capture directories A B, or --model to capture both sides")
    if a is not None and b is not None:
        for p in (a, b):
            if not Path(p).is_dir():
                raise PvError(f"{p}: not a capture directory")
        for flag, v in (
            ("--inject-fault", fault),
            ("--tokens", tokens),
            ("--prompt", prompt),
            ("--keep", keep),
        ):
            if v is not None:
                raise PvError(
                    f"{flag} only applies with --model and no A B (it controls the captures)"
                )
    if isolate and model is None:
        raise PvError("--isolate needs --model: it reruns this project's engine layer by layer")
    if tokens is not None and prompt is not None:
        raise PvError("give at most one of --tokens and --prompt")
    if keep is not None:
        k = Path(keep)
        if k.exists() and (not k.is_dir() or any(k.iterdir())):
            raise PvError(f"--keep {k}: must be a new or empty directory")
    return BisectPlan(
        Path(a) if a else None,
        Path(b) if b else None,
        model,
        tokens,
        prompt if (prompt is not None or tokens is not None or a is not None) else DEFAULT_PROMPT,
        fault,
        reference.lower(),
        isolate,
        _check_out_file(plot, ".png", "--plot"),
        metric.lower(),
        _check_out_file(report, ".md", "--report"),
        Path(keep) if keep else None,
        device,
        dtype,
    )


def _capture_both(plan: BisectPlan, loaded: Any, root: Path) -> tuple[Path, Path]:
    from pv.capture.trace import capture

    if plan.generate:
        from pv.cli.bisect_generate import capture_generations

        return capture_generations(plan, loaded, root)

    test_dir, ref_dir = root / "test", root / "reference"
    common: dict[str, Any] = {
        "tokens": plan.tokens,
        "prompt": plan.prompt if plan.tokens is None else None,
        "device": plan.device,
        "dtype": plan.dtype,
    }
    from pv.report.progress import Progress

    # Two full captures can take minutes: say which one runs, and how far (stderr only).
    with Progress(f"pv bisect: capturing the reference ({plan.reference})") as progress:
        capture(loaded, engine=plan.reference, output=ref_dir, on_write=progress.step, **common)
    with Progress(f"pv bisect: capturing the engine under test ({plan.engine})") as progress:
        capture(loaded, engine=plan.engine, output=test_dir, fault=plan.fault,
                on_write=progress.step, **common)
    return test_dir, ref_dir


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
    plan = make_plan(
        a,
        b,
        model=model,
        tokens=tokens,
        prompt=prompt,
        fault=fault,
        reference=reference,
        isolate=isolate,
        plot=plot,
        metric=metric,
        report=report,
        keep=keep,
        device=device,
        dtype=dtype,
    )
    plan = replace(plan, engine=engine.lower(), generate=generate, verify=not no_verify)
    if plan.isolate and not runners.get(plan.engine).isolates:
        able = [k for k in runners.RUNNERS.values() if k.isolates]
        raise PvError(f"--isolate reruns {' or '.join(k.description for k in able)} layer by layer: it needs "
                      f"--engine {' or '.join(k.name for k in able)}")
    if plan.generate and (plan.isolate or plan.plot or plan.report):
        raise PvError("--generate works without --isolate, --plot and --report")
    if plan.generate and plan.a is not None:
        from pv.capture.store.steps import load as load_generation

        load_generation(plan.a)  # both must be generation captures: fail before any work
        load_generation(plan.b or plan.a)
    tols = build_tolerances(threshold, rtol, atol, config_file)
    config = None
    if plan.model is not None:
        from pv.capture.faults import is_decode_fault
        from pv.capture.model.load import model_config
        from pv.capture.runtime import prefer_passive_openmp, resolve_device

        prefer_passive_openmp()  # bisect --model captures both sides
        config = model_config(plan.model)
        if plan.a is None or plan.isolate:
            resolve_device(plan.device)  # a missing GPU fails here, before the weights load
            # What each side refuses to run (llama.cpp: a GGUF file, the CPU, float32): before either captures.
            for kind in dict.fromkeys((runners.get(plan.engine), runners.get(plan.reference))):
                kind.check_plan(plan.model, plan.device, plan.dtype)
        spec = runners.get(plan.engine).fault(plan.fault, config.num_hidden_layers, config.features)
        if is_decode_fault(spec) and plan.generate < 2:
            raise PvError(f"fault {spec} only acts at decode steps: give --generate 2 or more")
    from pv.capture.model.load import load_model

    if plan.a is not None and plan.b is not None:
        # With --isolate, this project's engine is rerun against reference B layer by layer.
        loaded_ab = load_model(plan.model) if plan.isolate and plan.model else None
        return _finish(plan, plan.a, plan.b, config, tols, loaded_ab, fmt, verbose)

    loaded = load_model(plan.model or "synthetic")
    if plan.keep is not None:
        plan.keep.mkdir(parents=True, exist_ok=True)
        test_dir, ref_dir = _capture_both(plan, loaded, plan.keep)
        return _finish(plan, test_dir, ref_dir, config, tols, loaded, fmt, verbose)
    tmp = Path(tempfile.mkdtemp(prefix="pv-bisect-"))
    try:
        test_dir, ref_dir = _capture_both(plan, loaded, tmp)
        return _finish(plan, test_dir, ref_dir, config, tols, loaded, fmt, verbose)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(
    plan: BisectPlan, a: Path, b: Path, config: Any, tols: Any, loaded: Any, fmt: str, verbose: bool
) -> int:
    if plan.generate:
        from pv.cli.bisect_generate import finish_generation

        return finish_generation(plan, a, b, config, tols, fmt, verbose)
    from pv import files
    from pv.capture.store import directory
    from pv.compare.bisect import bisect
    from pv.compare.report import bisect_text, markdown

    ref_capture = directory.open_capture(b)
    result = bisect(a, ref_capture, model=config, tolerances=tols, verify=plan.verify)
    iso = None
    if plan.isolate and loaded is not None:
        from pv.capture.runners import Settings
        from pv.compare.isolate import isolate

        kind, cfg = runners.get(plan.engine), loaded.config
        engine = kind.load(loaded, Settings(device=plan.device, dtype=plan.dtype,
                                            fault=kind.fault(plan.fault, cfg.num_hidden_layers, cfg.features)))
        try:
            iso = isolate(engine, ref_capture, cumulative=result.report, tolerances=tols, config=cfg,
                          verify=plan.verify)
        finally:
            engine.close()
    context = []
    if plan.model is not None:
        context.append(f"model: `{plan.model}`")
        context.append(
            f"engine under test: {plan.engine}{' with fault ' + plan.fault if plan.fault else ''}; "
            f"reference: {plan.reference}"
        )
        context.append(f"input: {'tokens ' + plan.tokens if plan.tokens else repr(plan.prompt)}")
        if plan.a is None and plan.keep is None:
            context.append(
                "captures: in a temporary directory, deleted afterwards (--keep DIR keeps them)"
            )
    title = "pv bisect" + (f" ({plan.fault})" if plan.fault else "")
    if plan.plot is not None:
        from pv.compare.plot import plot_bisect

        plot_bisect(result, plan.plot, metric=plan.metric, title=title)
    if plan.report is not None:
        text = markdown(
            result,
            title=title,
            plot=plan.plot,
            report_path=plan.report,
            isolate=iso,
            context=context,
        )
        try:
            files.replace_text(plan.report, text)
        except OSError as exc:
            raise PvError(f"{plan.report}: cannot write report: {exc.strerror or exc}") from None
    if fmt.lower() == "json":
        out = result.to_dict()
        if iso is not None:
            out["isolate"] = iso.to_dict()
        out["files"] = {
            "plot": str(plan.plot) if plan.plot else None,
            "report": str(plan.report) if plan.report else None,
            "captures": [str(a), str(b)] if plan.keep else None,
        }
        click.echo(json.dumps(out, indent=1))
    else:
        lines = [c.replace("`", "") for c in context]
        click.echo(
            "\n".join(lines + ([""] if lines else []) + [bisect_text(result, verbose=verbose)])
        )
        if iso is not None:
            from pv.compare.isolate import isolate_rows
            from pv.compare.report import table

            headers, rows = isolate_rows(iso)
            click.echo("")
            click.echo(
                "local (each layer rerun from the reference input) vs cumulative error, layer output:"
            )
            click.echo(table(rows, headers))
            intro = iso.introduced
            click.echo(
                "bug introduced in layer(s): "
                + (", ".join(map(str, intro)) if intro else "none (no layer fails on its own)")
            )
        for label, p in (("plot", plan.plot), ("report", plan.report)):
            if p is not None:
                click.echo(f"{label}: {p}")
    return int(ExitCode.OK if result.ok else ExitCode.FINDINGS)
