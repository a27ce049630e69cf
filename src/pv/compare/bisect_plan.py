"""What a bisection will do, checked before anything runs: ``pv bisect`` and ``pv.bisect_run``.

Two ways in: two capture directories (``A B``: A under test, B the
reference), or a model (``model``), from which both sides are captured first:
the engine under test (``engine``, with ``fault``) against a reference runner
(``reference``: the transformers oracle by default). Every combination of
arguments, every output path, the runners' own preconditions (llama.cpp: a
GGUF file, the CPU, float32) and the fault are checked here, before any weight
loads, so a bad argument costs milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.errors import PvError

#: Prompt used when a model is given without tokens or a prompt.
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
    #: The model's config (``ModelConfig``) when ``model`` is given, read before any weight.
    config: Any = None

    @property
    def captures(self) -> bool:
        """Both sides are run here (a model and no A B)."""
        return self.a is None

    @property
    def streams(self) -> bool:
        """Both sides are compared while they run, and nothing is written (no ``keep``)."""
        return self.captures and self.keep is None


def _out_file(path: str | os.PathLike[str] | None, suffix: str, flag: str) -> Path | None:
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


def _check_inputs(a: Path | None, b: Path | None, model: str | None, given: dict[str, Any]) -> None:
    if (a is None) != (b is None) or (a is None and model is None):
        raise PvError("give two capture directories A B, or --model to capture both sides")
    if a is not None and b is not None:
        for p in (a, b):
            if not p.is_dir():
                raise PvError(f"{p}: not a capture directory")
        for flag, value in given.items():
            if value is not None:
                raise PvError(f"{flag} only applies with --model and no A B (it controls the captures)")


def make_plan(a: str | os.PathLike[str] | None = None, b: str | os.PathLike[str] | None = None, *,
              model: str | None = None, tokens: str | None = None, prompt: str | None = None,
              fault: str | None = None, engine: str = "pv", reference: str = "hf", isolate: bool = False,
              plot: str | os.PathLike[str] | None = None, metric: str = "sqnr",
              report: str | os.PathLike[str] | None = None, keep: str | os.PathLike[str] | None = None,
              device: str = "cpu", dtype: str = "float32", generate: int = 0, verify: bool = True) -> BisectPlan:
    """Every argument and their combination, checked; one ``PvError`` line for the first problem."""
    from pv.capture import runners

    pa, pb = (Path(a) if a is not None else None), (Path(b) if b is not None else None)
    _check_inputs(pa, pb, model, {"--inject-fault": fault, "--tokens": tokens, "--prompt": prompt,
                                  "--keep": keep})
    if isolate and model is None:
        raise PvError("--isolate needs --model: it reruns the engine under test layer by layer")
    if tokens is not None and prompt is not None:
        raise PvError("give at most one of --tokens and --prompt")
    if generate < 0:
        raise PvError(f"--generate {generate}: give a number of steps, 0 or more")
    if generate and (isolate or plot is not None or report is not None):
        raise PvError("--generate works without --isolate, --plot and --report")
    from pv.compare.plot import PLOT_METRICS

    if metric.lower() not in PLOT_METRICS:
        raise PvError(f"--plot-metric {metric}: choose one of {', '.join(PLOT_METRICS)}")
    if keep is not None:
        k = Path(keep)
        if k.exists() and (not k.is_dir() or any(k.iterdir())):
            raise PvError(f"--keep {k}: must be a new or empty directory")
    engine, reference = runners.get(engine).name, runners.get(reference).name
    if isolate and pa is None and not runners.get(engine).isolates:
        able = [k for k in runners.RUNNERS.values() if k.isolates]
        raise PvError(f"--isolate reruns {' or '.join(k.description for k in able)} layer by layer: it needs "
                      f"--engine {' or '.join(k.name for k in able)}")
    if generate and pa is not None and pb is not None:
        from pv.capture.store.steps import load as load_generation

        load_generation(pa)  # both must be generation captures: fail before any work
        load_generation(pb)
    plan = BisectPlan(pa, pb, model, tokens,
                      prompt if (prompt is not None or tokens is not None or pa is not None) else DEFAULT_PROMPT,
                      fault, reference, isolate, _out_file(plot, ".png", "--plot"), metric.lower(),
                      _out_file(report, ".md", "--report"), Path(keep) if keep is not None else None,
                      device, dtype, engine, generate, verify)
    return _with_model(plan) if model is not None else plan


def _with_model(plan: BisectPlan) -> BisectPlan:
    """The model's config and what the runners refuse, before any weight loads."""
    from dataclasses import replace

    from pv.capture import runners
    from pv.capture.faults import is_decode_fault
    from pv.capture.model.load import model_config
    from pv.capture.runtime import prefer_passive_openmp, resolve_device

    assert plan.model is not None
    prefer_passive_openmp()  # bisect --model captures both sides
    config = model_config(plan.model)
    if plan.tokens is not None and plan.captures:
        from pv.capture.tokens import check_context, parse_tokens

        ids = parse_tokens(plan.tokens, config.vocab_size)
        check_context(len(ids) + max(plan.generate - 1, 0), config,
                      "--tokens" + (f" and {plan.generate} generated token(s)" if plan.generate else ""))
    if plan.captures or plan.isolate:
        resolve_device(plan.device)  # a missing GPU fails here, before the weights load
    if plan.captures:
        # What each side refuses to run (llama.cpp: a GGUF file, the CPU, float32): before either captures.
        for kind in dict.fromkeys((runners.get(plan.engine), runners.get(plan.reference))):
            kind.check_plan(plan.model, plan.device, plan.dtype)
        spec = runners.get(plan.engine).fault(plan.fault, config.num_hidden_layers, config.features)
        if is_decode_fault(spec) and plan.generate < 2:
            raise PvError(f"fault {spec} only acts at decode steps: give --generate 2 or more")
    return replace(plan, config=config)


__all__ = ["DEFAULT_PROMPT", "BisectPlan", "make_plan"]
