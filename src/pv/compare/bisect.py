"""Name the first stage where two captures diverge, and every later good-to-bad step.

Bisection here is a walk, not a binary search: the captures are already on
disk and the walk is cheap, while the cosine of stages downstream of a bug is
not monotone (a residual add can wash an error out, the next projection can
bring it back), so halving would jump over the stage that matters. The walk
follows computation order (embedding, layer 0 stages, layer 1 ..., final
norm, logits) over the records of :func:`pv.compare.diff.diff_captures`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.store import aprt, directory
from pv.compare.diff import _config, compare_arrays, diff_captures
from pv.compare.pair import side_dtype
from pv.compare.records import DiffReport, StageRecord
from pv.compare.step_pairs import open_pair
from pv.compare.tolerances import Tolerances


@dataclass(frozen=True)
class Transition:
    """A good stage followed (skipping one-sided ones) by a bad one."""

    good: StageRecord | None
    bad: StageRecord

    def to_dict(self) -> dict[str, Any]:
        return {"from": _where(self.good), "to": _where(self.bad)}


def _where(r: StageRecord | None) -> dict[str, Any] | None:
    if r is None:
        return None
    whole = r.stage is not None and stage_table.BY_NAME[r.stage].whole_model
    return {"layer": None if whole else r.layer, "stage": r.stage}


@dataclass(frozen=True)
class BisectResult:
    report: DiffReport
    first: StageRecord | None
    last_good: StageRecord | None
    transitions: tuple[Transition, ...]

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        return _where(self.first)

    @property
    def ok(self) -> bool:
        return self.report.ok

    def summary(self) -> dict[str, Any]:
        return {
            **self.report.summary(),
            "first_divergence": self.first_divergence,
            "last_good": _where(self.last_good),
            "transitions": [t.to_dict() for t in self.transitions],
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out["summary"] = self.summary()
        return out


def walk(report: DiffReport) -> BisectResult:
    """Find the first bad record, the good one before it, and all good-to-bad steps."""
    first: StageRecord | None = None
    last_good: StageRecord | None = None
    previous: StageRecord | None = None
    transitions: list[Transition] = []
    for rec in report.records:
        if not (rec.compared or rec.bad):
            continue  # one-sided: reported in the table, no verdict
        if rec.bad:
            if first is None:
                first, last_good = rec, previous
            if previous is None or not previous.bad:
                transitions.append(Transition(previous, rec))
        previous = rec
    return BisectResult(report, first, last_good, tuple(transitions))


def bisect(
    a: str | Path | directory.Capture,
    b: str | Path | directory.Capture,
    *,
    model: Any = None,
    tolerances: Tolerances | None = None,
    verify: bool = True,
) -> BisectResult:
    """Compare capture ``a`` (under test) with ``b`` (reference) and walk to the first divergence.

    ``verify``: files must still have the digests their manifests record (``diff_captures``).
    """
    return walk(diff_captures(a, b, model=model, tolerances=tolerances, verify=verify))


# --------------------------------------------------------------------------- generations


@dataclass(frozen=True)
class StepVerdict:
    """One generation step of A against B: same inputs, same next token, logits in tolerance."""

    step: int
    position: int
    inputs_equal: bool
    token_a: int
    token_b: int
    logprob_a: float | None
    logprob_b: float | None
    #: ``lm_head`` of this step compared (None when a side did not capture it).
    logits: StageRecord | None

    @property
    def ok(self) -> bool:
        return (self.inputs_equal and self.token_a == self.token_b
                and (self.logits is None or not self.logits.bad))

    def reasons(self) -> list[str]:
        out = []
        if not self.inputs_equal:
            out.append("the two sides were fed different tokens")
        if self.token_a != self.token_b:
            out.append(f"next token {self.token_a} vs {self.token_b}")
        if self.logits is not None and self.logits.bad:
            out.extend(self.logits.reasons or ("logits out of tolerance",))
        return out

    def to_dict(self) -> dict[str, Any]:
        m = self.logits.metrics if self.logits is not None else None
        return {"step": self.step, "position": self.position, "ok": self.ok,
                "inputs_equal": self.inputs_equal, "token_a": self.token_a, "token_b": self.token_b,
                "logprob_a": self.logprob_a, "logprob_b": self.logprob_b,
                "logits_status": None if self.logits is None else self.logits.status,
                "logits_cosine": None if m is None else m.cosine, "reasons": self.reasons()}


@dataclass(frozen=True)
class GenerationBisect:
    """First step whose next token or logits leave tolerance, then the first stage inside it."""

    a: str
    b: str
    steps: tuple[StepVerdict, ...]
    first_step: StepVerdict | None
    stage: BisectResult | None
    notes: tuple[str, ...] = ()
    #: The step whose stages ``stage`` walked (the first divergent step, or, when no
    #: step's output left tolerance, the first step with a diverging stage).
    stage_step: int | None = None

    @property
    def ok(self) -> bool:
        return (self.first_step is None and bool(self.steps)
                and (self.stage is None or self.stage.first is None))

    def summary(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "steps": len(self.steps), "ok": self.ok,
            "first_divergent_step": None if self.first_step is None else {
                "step": self.first_step.step, "position": self.first_step.position,
                "reasons": self.first_step.reasons()},
            "stage_step": self.stage_step,
            "first_divergence": None if self.stage is None else self.stage.first_divergence,
            "last_good": None if self.stage is None else _where(self.stage.last_good),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "notes": list(self.notes),
                "steps": [s.to_dict() for s in self.steps],
                "stage_bisect": None if self.stage is None else self.stage.to_dict()}


def bisect_generation(
    a: str | Path,
    b: str | Path,
    *,
    model: Any = None,
    tolerances: Tolerances | None = None,
    max_steps: int | None = None,
    verify: bool = True,
) -> GenerationBisect:
    """Two-level bisection of two generation captures (``a`` under test, ``b`` reference).

    Level one walks the steps in order and stops at the first whose inputs,
    greedy next token or ``lm_head`` leave tolerance; level two bisects that
    step's stages as :func:`bisect` does. Steps after a token difference are
    not comparable unless both sides were fed the same tokens (``pv bisect
    --model --generate`` feeds the engine under test the reference's tokens).
    """
    from pv.capture.store import steps as gen_steps

    ra, rb = Path(a), Path(b)
    ga, gb = gen_steps.load(ra), gen_steps.load(rb)
    n = min(len(ga["steps"]), len(gb["steps"]))
    if max_steps is not None:
        n = min(n, max_steps)
    notes: list[str] = []
    if len(ga["steps"]) != len(gb["steps"]):
        notes.append(f"A has {len(ga['steps'])} steps, B {len(gb['steps'])}: compared the first {n}")
    tols = tolerances or Tolerances()
    config = _config(model)
    opened: dict[int, tuple[directory.Capture, directory.Capture]] = {}

    def step(t: int) -> tuple[directory.Capture, directory.Capture]:
        # Manifest-less steps (another engine's) are laid out from what generate.json says of them.
        if t not in opened:
            opened.clear()  # only the step being judged is kept
            opened[t] = open_pair(gen_steps.step_dir(ra, t), gen_steps.step_dir(rb, t), ga["steps"][t],
                                  gb["steps"][t], config)
        return opened[t]

    def logits(t: int) -> StageRecord | None:
        return _next_token_logprobs(*step(t), tols, verify)

    def stages(t: int) -> BisectResult:
        return bisect(*step(t), model=model, tolerances=tolerances, verify=verify)

    return walk_generation(str(ra), str(rb), [(ga["steps"][t], gb["steps"][t]) for t in range(n)], logits, stages,
                           notes)


def walk_generation(a: str, b: str, steps: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                    logits: Callable[[int], StageRecord | None], stages: Callable[[int], BisectResult],
                    notes: list[str]) -> GenerationBisect:
    """The two levels over steps (each side's ``generate.json`` step record), however they were made:
    ``logits(t)`` compares step ``t``'s next-token log-probabilities, ``stages(t)`` walks its stages."""
    verdicts: list[StepVerdict] = []
    first: StepVerdict | None = None
    for t, (sa, sb) in enumerate(steps):
        compared = logits(t)
        if compared is None and t == 0:
            notes.append("lm_head not captured on both sides: steps judged by their tokens only")
        v = StepVerdict(t, int(sa.get("position", 0)), list(sa["input"]) == list(sb["input"]),
                        int(sa["predicted"]), int(sb["predicted"]), sa.get("logprob"), sb.get("logprob"), compared)
        verdicts.append(v)
        if not v.ok:
            first = v
            break
    stage = None
    stage_step = None
    if first is None:
        # No output left tolerance (a quantized engine's class is loose): still name
        # the first step with a diverging stage, so a stage-level bug is never missed.
        for t in range(len(steps)):
            walked = stages(t)
            if walked.first is not None:
                stage, stage_step = walked, t
                notes.append(f"no step's next token or log-probabilities left tolerance, but step "
                             f"{t} has a diverging stage")
                break
    elif first.inputs_equal:
        # A step before it may already hold the first diverging stage while its output stays
        # within tolerance (a bug whose effect grows over the steps): that step is walked.
        for t in range(first.step + 1):
            stage_step, stage = t, stages(t)
            if stage.first is not None:
                break
        if stage is not None and stage.first is None:
            notes.append(f"step {first.step}: every stage is within tolerance; the next token "
                         "differs on a near tie")
        elif stage_step != first.step:
            notes.append(f"step {stage_step} already has a diverging stage, though its next token and "
                         f"log-probabilities stay within tolerance")
    else:
        notes.append(f"step {first.step}: the sides were fed different tokens (their "
                     "generations parted earlier); feed both the same tokens to compare further")
    return GenerationBisect(a, b, tuple(verdicts), first, stage, tuple(notes), stage_step)


def _next_token_logprobs(ca: directory.Capture, cb: directory.Capture, tolerances: Tolerances,
                         verify: bool = True) -> StageRecord | None:
    """Step captures' ``lm_head`` read and compared by ``compare_logprobs``; None when a side has none."""
    rows, dtypes = [], []
    for cap in (ca, cb):
        entry = cap.by_key().get(("lm_head", None))
        if entry is None:
            return None
        if verify:
            aprt.require_digest(entry.path, entry.meta)
        _, values = aprt.read(entry.path)
        rows.append((values, entry.shape))
        dtypes.append(side_dtype(entry.meta, cap.manifest))
    return compare_logprobs(rows[0], rows[1], dtypes[0], dtypes[1], tolerances, str(ca.root), str(cb.root))


def compare_logprobs(a: tuple[np.ndarray, Sequence[int] | None], b: tuple[np.ndarray, Sequence[int] | None],
                     dtype_a: str | None, dtype_b: str | None, tolerances: Tolerances, path_a: str | None = None,
                     path_b: str | None = None) -> StageRecord | None:
    """A step's next-token log-probabilities (log-softmax of ``lm_head``'s last row), compared.

    Log-probabilities up to their mean, not raw logits: a shift of every logit
    by one constant changes nothing a sampler sees and is no divergence, while
    every difference between two tokens' log-probabilities counts. ``a`` and
    ``b`` are each side's ``lm_head`` values and shape; None when a row cannot be read.
    """
    from pv.compare.tolerances import looser

    rows = []
    for values, shape in (a, b):
        vocab = shape[-1] if shape else values.size
        if vocab <= 0 or values.size % vocab:
            return None
        row = values.reshape(-1)[-vocab:].astype(np.float64)
        m = float(row.max())
        logprobs = row - (m + float(np.log(np.exp(row - m).sum())))
        # Centred: the normaliser is one large constant per row that would swamp a
        # relative error; log p - mean(log p) keeps every difference between tokens.
        rows.append((logprobs - logprobs.mean()).reshape(1, vocab))
    if rows[0].shape != rows[1].shape:
        return None
    tol = tolerances.for_stage("lm_head", looser(dtype_a, dtype_b))
    rec = compare_arrays(rows[0], rows[1], "lm_head", None, tolerance=tol)
    return StageRecord(rec.stage, rec.layer, rec.status, rec.metrics, tol, looser(dtype_a, dtype_b),
                       tuple(f"next-token log-probabilities (centred): {r}" for r in rec.reasons), path_a, path_b)
