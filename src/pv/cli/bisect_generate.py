"""``pv bisect --generate``: capture two generations and bisect them, first the step, then the stage.

With ``--model`` the reference generates greedily and the engine under test is
fed the reference's tokens, so the two sides see the same inputs at every step
(``pv.compare.bisect.bisect_generation`` explains the two levels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pv.errors import ExitCode

if TYPE_CHECKING:
    from pv.cli.bisect import BisectPlan


def capture_generations(plan: BisectPlan, loaded: Any, root: Path) -> tuple[Path, Path]:
    """Reference first (greedy), then the engine under test fed the reference's tokens."""
    from pv.capture.generate import capture_generation
    from pv.capture.trace import make_plan as trace_plan

    test_dir, ref_dir = root / "test", root / "reference"
    common: dict[str, Any] = {
        "tokens": plan.tokens,
        "prompt": plan.prompt if plan.tokens is None else None,
        "device": plan.device,
        "dtype": plan.dtype,
    }
    from pv.report.progress import Progress

    with Progress(f"pv bisect: generating {plan.generate} token(s) with the reference "
                  f"({plan.reference})") as progress:
        ref = capture_generation(
            trace_plan(loaded.source, loaded.config, engine=plan.reference, output=ref_dir, **common),
            loaded, plan.generate, on_write=progress.step)
    with Progress(f"pv bisect: feeding them to the engine under test ({plan.engine})") as progress:
        capture_generation(
            trace_plan(loaded.source, loaded.config, engine=plan.engine, output=test_dir,
                       fault=plan.fault, **common),
            loaded, plan.generate, forced=ref.fed, on_write=progress.step)
    return test_dir, ref_dir


def finish_generation(plan: BisectPlan, a: Path, b: Path, config: Any, tols: Any, fmt: str,
                       verbose: bool) -> int:
    from pv.compare.bisect import bisect_generation
    from pv.compare.report import bisect_text, table

    result = bisect_generation(a, b, model=config, tolerances=tols, max_steps=plan.generate,
                               verify=plan.verify)
    if fmt.lower() == "json":
        out = result.to_dict()
        out["files"] = {"captures": [str(a), str(b)] if plan.keep else None}
        click.echo(json.dumps(out, indent=1))
        return int(ExitCode.OK if result.ok else ExitCode.FINDINGS)
    lines = []
    if plan.model is not None:
        lines.append(f"model: {plan.model}")
        lines.append(f"engine under test: {plan.engine}"
                     f"{' with fault ' + plan.fault if plan.fault else ''}; reference: {plan.reference}"
                     " (the engine under test is fed the reference's tokens)")
    rows = []
    for v in result.steps:
        m = v.logits.metrics if v.logits is not None else None
        rows.append([str(v.step), str(v.position), str(v.token_a), str(v.token_b),
                     "-" if m is None else f"{m.cosine:.6f}", "ok" if v.ok else "FAIL",
                     "; ".join(v.reasons())])
    lines.append(table(rows, ["step", "position", "token A", "token B", "log-prob cos", "verdict",
                              "why"]))
    lines.extend(f"note: {n}" for n in result.notes)
    if result.first_step is None and result.stage is not None:
        lines.append(f"outputs within tolerance at every step; first step with a diverging "
                     f"stage: {result.stage_step}")
        lines.append("")
        lines.append(f"inside step {result.stage_step}:")
        lines.append(bisect_text(result.stage, verbose=verbose))
    elif result.first_step is None:
        lines.append(f"no divergence over {len(result.steps)} steps")
    else:
        lines.append(f"first divergent step: {result.first_step.step} "
                     f"(position {result.first_step.position})")
        if result.stage is not None:
            lines.append("")
            lines.append(f"inside step {result.first_step.step}:")
            lines.append(bisect_text(result.stage, verbose=verbose))
    click.echo("\n".join(lines))
    return int(ExitCode.OK if result.ok else ExitCode.FINDINGS)
