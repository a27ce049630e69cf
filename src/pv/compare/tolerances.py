"""Verdicts: when is a stage "the same" as the reference?

A stage passes when all of these hold (``b`` is the reference):

1. NaN and Inf agree: no position is NaN on one side only, no Inf differs.
2. ``cosine >= cosine_min`` over the compared part: the direction is right.
3. For every position p (a token; the query row for attention matrices; the
   whole tensor when no position axis is known)::

       RMS(a_p - b_p) <= atol + rtol * RMS(b_p)

   the magnitude is right, everywhere. Cosine alone is blind to a uniform
   scale (scores scaled by 1/D instead of 1/sqrt(D) keep cosine exactly 1.0);
   a whole-tensor relative error would average a bug at one position (a mask
   off by one touches the last rows least) into the healthy ones, so the
   worst position decides.
4. Where the tolerance names a ``scale_error`` or ``bias_error`` (the
   ``quantized`` class does), no systematic deviation: the fit
   ``a = (1 + scale) b + bias`` over the stage shows no scale or bias of that
   size that is also many standard errors from zero, and no head's cosine is
   below the threshold (``pv.compare.systematic``). This is what finds a wrong
   constant smaller than a quantized engine's rounding noise.

Default tolerances depend on what is compared, because rounding error does:
float32 against float32 differs only by summation order (~1e-6 relative), half
precision rounds every stage (float16 ~5e-4, bfloat16 ~4e-3 per value), and
quantized weights change each projection by percent. The pair is judged by the
looser of its two dtypes. Per-stage overrides and ``--atol/--rtol/--threshold``
adjust them; see ``docs/compare.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.bounded import brief, load_data, show_path
from pv.compare import systematic
from pv.compare.metrics import EPS, Metrics
from pv.errors import PvError


@dataclass(frozen=True)
class Tolerance:
    cosine: float
    rtol: float
    atol: float
    #: Smallest systematic scale |s - 1| and bias (a fraction of RMS(ref)) reported when it is also
    #: ``systematic.Z`` standard errors from zero; 0 turns the test off (``pv.compare.systematic``).
    scale_error: float = 0.0
    bias_error: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: Loosest last. Keys are dtype classes (see :func:`dtype_class`).
DEFAULTS: dict[str, Tolerance] = {
    # Only summation order differs: a thousand times the observed ~1e-6, still
    # far below the ~1e-2 that the subtlest catalogued bug (RoPE base) causes.
    "float32": Tolerance(cosine=0.99999, rtol=1e-3, atol=1e-6),
    # One float16 rounding per value (eps 9.8e-4) plus accumulation over layers.
    "float16": Tolerance(cosine=0.9995, rtol=2e-2, atol=1e-4),
    # bfloat16 keeps 8 bits of mantissa (eps 7.8e-3): ten times looser again.
    "bfloat16": Tolerance(cosine=0.998, rtol=6e-2, atol=1e-3),
    # 4- to 8-bit weights move every projection by percent: only gross bugs show, unless they
    # are systematic: a scale of 2.5% or a bias of 0.75% of the signal, consistent over the
    # channels, is reported (clean llama.cpp runs drift by up to 1.5% and 0.5%, docs/compare.md).
    "quantized": Tolerance(cosine=0.99, rtol=0.2, atol=1e-2, scale_error=0.025, bias_error=0.0075),
}
#: Stages a softmax over the last axis reads: a shift of a whole row changes nothing after them
#: (and clean llama.cpp runs shift their logits and scores by a row constant), so their bias is
#: not tested unless a tolerance file asks.
SHIFT_FREE = frozenset({"attn_scores", "lm_head", "router_logits"})
_RANK = {name: i for i, name in enumerate(DEFAULTS)}

_ALIASES = {
    "float32": "float32",
    "f32": "float32",
    "fp32": "float32",
    "torch.float32": "float32",
    "float": "float32",
    "float64": "float32",
    "f64": "float32",
    "float16": "float16",
    "f16": "float16",
    "fp16": "float16",
    "half": "float16",
    "torch.float16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "torch.bfloat16": "bfloat16",
}


def dtype_class(name: str | None) -> str | None:
    """``float32``/``float16``/``bfloat16``/``quantized`` for a dtype string, None if unknown."""
    if not name:
        return None
    key = str(name).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith(("q", "int", "iq", "nf4", "fp8", "float8", "mxfp", "uint")):
        return "quantized"
    return None


def looser(a: str | None, b: str | None) -> str | None:
    known = [x for x in (a, b) if x is not None]
    if not known:
        return None
    return max(known, key=lambda x: _RANK[x])


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PvError(f"{where}: expected a number, got {brief(value)}")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise PvError(f"{where}: expected a number, got {brief(value)}") from None
    if math.isnan(out) or out < 0:
        raise PvError(f"{where}: expected a non-negative number, got {brief(value)}")
    return out


_KEYS = ("cosine", "rtol", "atol", "scale_error", "bias_error")


def _partial(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise PvError(f"{where}: expected a mapping of {', '.join(_KEYS)}")
    out: dict[str, float] = {}
    for key, value in data.items():
        k = str(key).lower()
        if k == "threshold":
            k = "cosine"
        if k not in _KEYS:
            raise PvError(f"{where}: unknown key {brief(key)}; valid keys: {', '.join(_KEYS)}")
        out[k] = _num(value, f"{where}.{key}")
    if "cosine" in out and out["cosine"] > 1.0:
        raise PvError(f"{where}.cosine: a cosine threshold must be at most 1.0")
    return out


@dataclass(frozen=True)
class Tolerances:
    """Where each stage's tolerance comes from: dtype defaults < config < flags.

    ``base`` changes every stage, ``per_stage`` one stage (by name), ``flags``
    (from ``--threshold/--atol/--rtol``) beat everything else.
    """

    base: dict[str, float] = field(default_factory=dict)
    per_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    per_dtype: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: dict[str, float] = field(default_factory=dict)
    #: Dtype class used when neither side says what it is.
    assume: str = "float32"
    #: dtype -> stage -> tolerance, as ``pv tolerances measure`` writes them.
    per_dtype_stage: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def for_stage(self, stage: str | None, dtype: str | None) -> Tolerance:
        """dtype default < measured default < file (dtype, dtype+stage, all, stage) < flags."""
        from pv.compare.measured import MEASURED

        klass = dtype or self.assume
        tol = DEFAULTS[klass]
        if stage is not None:
            tol = replace(tol, **MEASURED.get(klass, {}).get(stage, {}))
            if stage in SHIFT_FREE:
                tol = replace(tol, bias_error=0.0)
        tol = replace(tol, **self.per_dtype.get(klass, {}))
        if stage is not None:
            tol = replace(tol, **self.per_dtype_stage.get(klass, {}).get(stage, {}))
        tol = replace(tol, **self.base)
        if stage is not None:
            tol = replace(tol, **self.per_stage.get(stage, {}))
        return replace(tol, **self.flags)

    def with_flags(
        self, *, cosine: float | None = None, rtol: float | None = None, atol: float | None = None
    ) -> Tolerances:
        raw = {"cosine": cosine, "rtol": rtol, "atol": atol}
        flags = _partial({k: v for k, v in raw.items() if v is not None}, "command line")
        return replace(self, flags={**self.flags, **flags})

    def to_dict(self) -> dict[str, Any]:
        return {"defaults": {k: v.to_dict() for k, v in DEFAULTS.items()}, **asdict(self)}


def _dtype_key(name: Any) -> str | None:
    """The dtype class a config key names, or None (only short strings can name one)."""
    if not isinstance(name, str) or len(name) > 32:
        return None
    klass = dtype_class(name) or name.lower()
    return klass if klass in DEFAULTS else None


def parse_config(data: Any, where: str) -> Tolerances:
    """Build tolerances from a config mapping (see ``docs/compare.md`` for the format)."""
    if not isinstance(data, Mapping):
        raise PvError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    if "tolerances" in data and isinstance(data["tolerances"], Mapping) and len(data) == 1:
        data = dict(data["tolerances"])
    base = _partial(
        {k: v for k, v in data.items() if str(k).lower() in (*_KEYS, "threshold")}, where
    )
    per_stage: dict[str, dict[str, float]] = {}
    per_dtype: dict[str, dict[str, float]] = {}
    per_dtype_stage: dict[str, dict[str, dict[str, float]]] = {}
    assume = "float32"

    def stage_block(value: Any, at: str) -> dict[str, dict[str, float]]:
        if not isinstance(value, Mapping):
            raise PvError(f"{at}: expected a mapping of stage name to tolerances")
        out: dict[str, dict[str, float]] = {}
        for name, sub in value.items():
            if not isinstance(name, str) or not name.isprintable() or len(name) > 64:
                raise PvError(f"{at}: {brief(name)} is not a stage name")
            try:
                st = stage_table.get(name).name
            except PvError as exc:
                raise PvError(f"{at}: {exc}") from None
            out[st] = _partial(sub, f"{at}.{name}")
        return out

    for key, value in data.items():
        k = str(key).lower()
        if k in (*_KEYS, "threshold"):
            continue
        if k == "measured":  # provenance written by ``pv tolerances measure``; not a tolerance
            continue
        if k == "stages":
            per_stage.update(stage_block(value, f"{where}.stages"))
        elif k == "dtypes":
            if not isinstance(value, Mapping):
                raise PvError(f"{where}.dtypes: expected a mapping of dtype to tolerances")
            for name, sub in value.items():
                klass = _dtype_key(name)
                if klass is None:
                    raise PvError(
                        f"{where}.dtypes: unknown dtype {brief(name)}; valid: {', '.join(DEFAULTS)}"
                    )
                if isinstance(sub, Mapping) and "stages" in sub:
                    per_dtype_stage[klass] = stage_block(sub["stages"], f"{where}.dtypes.{name}.stages")
                    sub = {k2: v2 for k2, v2 in sub.items() if k2 != "stages"}
                per_dtype[klass] = _partial(sub, f"{where}.dtypes.{name}")
        elif k == "assume_dtype":
            klass = _dtype_key(value)
            if klass is None:
                raise PvError(
                    f"{where}.assume_dtype: unknown dtype {brief(value)}; valid: {', '.join(DEFAULTS)}"
                )
            assume = klass
        else:
            raise PvError(
                f"{where}: unknown key {brief(key)}; valid keys: {', '.join(_KEYS)}, stages, dtypes, assume_dtype"
            )
    return Tolerances(base=base, per_stage=per_stage, per_dtype=per_dtype, assume=assume,
                      per_dtype_stage=per_dtype_stage)


#: Bounds on a tolerance file: a few dozen keys in practice.
CONFIG_MAX_BYTES = 1024 * 1024
CONFIG_MAX_DEPTH = 8
CONFIG_MAX_ITEMS = 100_000


def load_config(path: str | Path) -> Tolerances:
    """Read a YAML or JSON tolerance file (safe loader, bounded; see ``pv.bounded``)."""
    data = load_data(
        path,
        "tolerance config",
        limit=CONFIG_MAX_BYTES,
        max_depth=CONFIG_MAX_DEPTH,
        max_items=CONFIG_MAX_ITEMS,
    )
    where = show_path(path)
    if data is None:
        raise PvError(f"{where}: tolerance config is empty")
    return parse_config(data, where)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]
    #: Worst per-position ratio RMS(d) / (atol + rtol*RMS(b)); > 1 fails.
    budget_used: float


def judge(m: Metrics, tol: Tolerance) -> Verdict:
    """Apply the verdict rule in the module docstring; reasons say which part failed."""
    reasons: list[str] = []
    if m.nan_mismatch:
        reasons.append(f"NaN on one side only at {m.nan_mismatch} positions")
    if m.inf_mismatch:
        reasons.append(f"Inf values disagree at {m.inf_mismatch} positions")
    if m.cosine < tol.cosine:
        reasons.append(f"cosine {m.cosine:.6f} < {tol.cosine}")
    worst = 0.0
    worst_i: int | None = None
    n = min(len(m.positions), len(m.position_rms), len(m.position_ref_rms))
    if n:
        # One numpy pass instead of a Python loop over thousands of positions;
        # the same IEEE operations, and the first position wins a tie.
        d_arr = np.asarray(m.position_rms[:n], dtype=np.float64)
        allowed = tol.atol + tol.rtol * np.asarray(m.position_ref_rms[:n], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.where(allowed > 0, d_arr / allowed, np.where(d_arr > 0, math.inf, 0.0))
        used = np.where(np.isnan(used), 0.0, used)
        i = int(np.argmax(used))
        if used[i] > 0.0:
            worst, worst_i = float(used[i]), i
    if worst > 1.0 and worst_i is not None:
        d, r = m.position_rms[worst_i], m.position_ref_rms[worst_i]
        where = (
            f"position {m.positions[worst_i]}"
            if len(m.positions) > 1 or m.position_cosine
            else "tensor"
        )
        reasons.append(
            f"{where}: RMS error {d:.3g} > atol + rtol*RMS(ref) = {tol.atol:g} + {tol.rtol:g}*{r:.3g}"
            f" (relative {d / max(r, EPS):.3g})"
        )
    reasons.extend(systematic.findings(m.systematic, m.head_cosine, scale_error=tol.scale_error,
                                       bias_error=tol.bias_error, cosine=tol.cosine))
    return Verdict(ok=not reasons, reasons=tuple(reasons), budget_used=worst)
