"""``pv import`` of a generation: ``generate.json`` plus one folder of dumps per step.

Another engine that decodes with a KV cache dumps each step on its own
(``step-0/`` the prefill, ``step-1/`` ... one decode step each, any of the
dump formats ``pv import`` reads) and writes ``generate.json`` in pv's layout
(``pv.capture.store.steps``: per step the tokens it was fed and the token it
predicts). Each step is imported through the mapping as a capture of its
own, knowing where the step starts: a decode step's attention matrices are
``[NH, S_new, P + S_new]``, which ``crop_keys`` cuts to and ``--model``
checks. The result is a generation capture ``pv bisect --generate`` reads like
one ``pv trace --generate`` wrote; its ``generate.json`` is written last, so an
import that fails leaves no generation behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.capture.importer.convert import import_dumps
from pv.capture.importer.mapping import Mapping
from pv.capture.model.config import ModelConfig
from pv.capture.store import steps as gen_steps
from pv.errors import PvError


@dataclass(frozen=True)
class GenerationImport:
    output: Path
    steps: int
    files: int
    stages: list[str]
    ignored: list[str]


def is_generation(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """One folder holding ``generate.json``: a generation to import step by step."""
    return len(paths) == 1 and (Path(paths[0]) / gen_steps.GENERATE_FILE).is_file()


def import_generation(root: str | os.PathLike[str], mapping: Mapping, output: str | os.PathLike[str], *,
                      config: ModelConfig | None = None, dtype: str | None = None) -> GenerationImport:
    """Import every step's dumps into ``output/step-N`` and write ``output/generate.json``.

    ``dtype`` declares the engine's compute dtype for every step (``pv import
    --dtype``). The prefill's manifest records the prompt as its token ids, checked
    against its stages' positions, as ``pv trace --generate`` records them.
    """
    src, out = Path(root), Path(output)
    doc = gen_steps.load(src)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PvError(f"{out}: output must be a new or empty directory")
    for rec in doc["steps"]:
        folder = gen_steps.step_dir(src, rec["step"])
        if not folder.is_dir():
            raise PvError(f"{src}: generate.json lists step {rec['step']}, but {folder.name}/ is missing "
                          "(each step's dumps go in their own step-N folder)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    n_files = 0
    stages: dict[str, None] = {}
    ignored: dict[str, None] = {}
    try:
        for rec in doc["steps"]:
            t = rec["step"]
            try:
                prompt = ",".join(str(i) for i in rec["input"]) if t == 0 else None
                done = import_dumps([gen_steps.step_dir(src, t)], mapping, gen_steps.step_dir(out, t),
                                    config=config, past=rec["position"], dtype=dtype, tokens=prompt)
            except PvError as exc:
                raise PvError(f"step {t}: {exc}") from None
            n_files += done.files
            stages.update(dict.fromkeys(done.stages))
            ignored.update(dict.fromkeys(done.ignored))
        files.replace_text(out / gen_steps.GENERATE_FILE, json.dumps(_record(doc, mapping), indent=1) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for rec in doc["steps"]:
                shutil.rmtree(gen_steps.step_dir(out, rec["step"]), ignore_errors=True)
        raise
    return GenerationImport(out, len(doc["steps"]), n_files, list(stages), sorted(ignored))


def _record(doc: dict[str, Any], mapping: Mapping) -> dict[str, Any]:
    """The imported generation's ``generate.json``: the engine's steps as it recorded them."""
    kept = ("step", "position", "input", "predicted", "logprob", "top", "fed")
    steps = [{**{k: rec[k] for k in kept if k in rec}, "dir": gen_steps.step_dir(Path(), rec["step"]).name}
             for rec in doc["steps"]]
    return {"format": gen_steps.FORMAT, "version": gen_steps.VERSION,
            "run": {"engine": f"import:{mapping.name}"}, "prompt_tokens": steps[0]["input"],
            "tokens": [rec["predicted"] for rec in steps], "steps": steps}


__all__ = ["GenerationImport", "import_generation", "is_generation"]
