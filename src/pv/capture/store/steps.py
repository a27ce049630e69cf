"""The layout of a generation capture (``pv trace --generate N``), readable with numpy alone.

``generate.json`` plus one capture directory per step (``step-0`` the prefill,
then one per decode step). ``pv.capture.generate`` writes it; ``pv bisect
--generate`` reads it through here, so comparing generations never imports
torch.

Another engine may write the same layout without manifests (``examples/aprt_writer.py``
is a reference writer). Its step folders then say nothing about shapes, and a
decode step's attention matrices ``[NH, S_new, P + S_new]`` cannot be told
from a prefill's square ones by their element count alone. What
``generate.json`` says of each step, how many tokens it was fed and at which
position, lays them out (:func:`lay_out`); where that fails, the file carries
one line saying why instead of a guessed shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pv import files
from pv import stages as stage_table
from pv.capture.store.directory import Capture, Entry
from pv.errors import PvError

GENERATE_FILE = "generate.json"
FORMAT = "pv-generate"
VERSION = 1

#: Key of a file record (``Entry.meta``) saying why a manifest-less file could not be laid out;
#: a comparison reports it as the pair's error instead of reading the file with a guessed shape.
LAYOUT_PROBLEM = "step_layout_problem"

#: The named sizes of the stage layouts other than S (``pv.stages.Dims``).
SIZE_NAMES = ("H", "NH", "KVH", "D", "I", "V", "E", "K", "QKV", "NHD")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step}"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _step_problem(rec: Any, i: int, position: int | None) -> str | None:
    """What makes ``steps[i]`` unusable, or None. ``position``: where the steps before it leave off."""
    if not isinstance(rec, dict):
        return "is not an object"
    if rec.get("step") != i or not _int(rec.get("step")):
        return f"'step' must be {i} (steps are listed in order from 0)"
    ids = rec.get("input")
    if not isinstance(ids, list) or not ids or not all(_int(x) and x >= 0 for x in ids):
        return "'input' must be a non-empty list of token ids (the tokens this step was fed)"
    if not _int(rec.get("predicted")):
        return "'predicted' must be a token id (the step's greedy next token)"
    given = rec.get("position")
    if given is not None and not (_int(given) and given >= 0):
        return "'position' must be a number of positions, 0 or more"
    if given is not None and position is not None and given != position:
        return (f"'position' is {given}, but the steps before it were fed {position} token(s) "
                "(each step starts where the previous one left off)")
    if "logprob" in rec and rec["logprob"] is not None and not isinstance(rec["logprob"], (int, float)):
        return "'logprob' must be a number"
    return None


def load(root: str | Path) -> dict[str, Any]:
    """A generation directory's ``generate.json``, checked; each step's ``position`` filled in.

    Required per step: ``step``, ``input``, ``predicted``. ``position`` may be
    left out: step 0 starts at 0, and every later step where the one before it
    left off (its position plus its input's length), which is also what a
    given ``position`` must say after step 0.
    """
    path = Path(root) / GENERATE_FILE
    if not path.is_file():
        raise PvError(f"{root}: not a generation capture (no {GENERATE_FILE}; use pv trace --generate N)")
    try:
        data = json.loads(files.read_regular(path, 64 << 20).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise PvError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("steps"), list):
        raise PvError(f"{path}: not a pv generation record (format != {FORMAT!r})")
    if not data["steps"]:
        raise PvError(f"{path}: 'steps' is empty")
    steps: list[dict[str, Any]] = []
    position: int | None = None
    for i, rec in enumerate(data["steps"]):
        problem = _step_problem(rec, i, position)
        if problem:
            raise PvError(f"{path}: steps[{i}] is malformed: {problem}")
        start = rec.get("position", 0 if position is None else position)
        steps.append({**rec, "position": start})
        position = start + len(rec["input"])
    return {**data, "steps": steps}


def step_of(folder: Path) -> dict[str, Any] | None:
    """The ``generate.json`` record of a generation's step folder (``GEN/step-K``); None for any other folder."""
    m = re.fullmatch(r"step-(\d+)", folder.name)
    if m is None or not (folder.parent / GENERATE_FILE).is_file():
        return None
    listed = load(folder.parent)["steps"]
    t = int(m.group(1))
    if t >= len(listed):
        raise PvError(f"{folder}: {folder.parent / GENERATE_FILE} lists {len(listed)} step(s), not step {t}")
    return dict(listed[t])


def sizes_of(capture: Capture) -> dict[str, int]:
    """The named sizes (H, NH, V, ...) a capture's manifest records, S left out."""
    out: dict[str, int] = {}
    for e in capture.entries:
        if e.shape is None or e.layout is None or len(e.layout) != len(e.shape):
            continue
        for name, size in zip(e.layout, e.shape):
            if name in SIZE_NAMES:
                out.setdefault(name, int(size))
    return out


def step_shape(stage: str, count: int, n_new: int, past: int,
               sizes: Mapping[str, int]) -> tuple[tuple[int, ...] | None, str | None]:
    """A manifest-less file's shape at a step fed ``n_new`` tokens after ``past`` positions.

    Returns ``(shape, None)``, ``(None, why)`` when ``count`` values cannot be
    that stage at that step, or ``(None, None)`` when too few sizes are known
    to say (the pair is then compared as before: the other side's shape, or flat).
    ``S`` is ``n_new``; the attention matrices' keys are ``past + n_new``.
    ``lm_head`` may also hold the last position's row alone.
    """
    st = stage_table.get(stage)
    dims: list[int | None] = []
    seen_s = 0
    for name in st.layout:
        if name == "S":
            dims.append(n_new if seen_s == 0 else past + n_new)
            seen_s += 1
        else:
            size = sizes.get(name)
            dims.append(size if size is not None and size > 0 else None)
    unknown = [i for i, d in enumerate(dims) if d is None]
    known = math.prod(d for d in dims if d is not None)
    if not unknown:
        shape = tuple(int(d) for d in dims if d is not None)
        if known == count:
            return shape, None
        if st.name == "lm_head" and count == shape[-1]:
            return (1, shape[-1]), None
        return None, f"{count} values are not {st.name} {_layout(st)} = {list(shape)}"
    if len(unknown) > 1 or st.name == "lm_head":
        return None, None  # the vocabulary is needed to tell all rows from the last one
    if known <= 0 or count % known or count == 0:
        shown = [d if d is not None else "?" for d in dims]
        return None, f"{count} values are not {st.name} {_layout(st)} = {shown}"
    dims[unknown[0]] = count // known
    return tuple(int(d) for d in dims if d is not None), None


def _layout(st: stage_table.Stage) -> str:
    return "[" + ", ".join(st.layout) + "]"


def lay_out(capture: Capture, record: Mapping[str, Any], sizes: Mapping[str, int]) -> Capture:
    """``capture`` (one step's folder) with its manifest-less files laid out from ``record``.

    ``record`` is the step's entry of :func:`load` (its ``input`` and
    ``position``); ``sizes`` the named sizes known from the model or from
    either side's manifest. Files a manifest describes are left as they are.
    """
    n_new, past = len(record["input"]), int(record["position"])
    step = record.get("step")
    entries: list[Entry] = []
    for e in capture.entries:
        if e.shape is not None:
            entries.append(e)
            continue
        shape, problem = step_shape(e.stage, e.header.count, n_new, past, sizes)
        if shape is not None:
            entries.append(replace(e, shape=shape, layout=stage_table.get(e.stage).layout))
        elif problem is not None:
            rel = e.path.relative_to(capture.root).as_posix()
            why = (f"{rel} cannot be laid out from {GENERATE_FILE}: {problem} at step {step} "
                   f"(position {past}, {n_new} new token(s))")
            entries.append(replace(e, meta={**e.meta, LAYOUT_PROBLEM: why}))
        else:
            entries.append(e)
    return replace(capture, entries=tuple(entries))
