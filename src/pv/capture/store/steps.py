"""The layout of a generation capture (``pv trace --generate N``), readable with numpy alone.

``generate.json`` plus one capture directory per step (``step-0`` the prefill,
then one per decode step). ``pv.capture.generate`` writes it; ``pv bisect
--generate`` reads it through here, so comparing generations never imports
torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pv import files
from pv.errors import PvError

GENERATE_FILE = "generate.json"
FORMAT = "pv-generate"
VERSION = 1


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step}"


def load(root: str | Path) -> dict[str, Any]:
    """A generation directory's ``generate.json``, checked."""
    path = Path(root) / GENERATE_FILE
    if not path.is_file():
        raise PvError(f"{root}: not a generation capture (no {GENERATE_FILE}; use pv trace --generate N)")
    try:
        data = json.loads(files.read_regular(path, 64 << 20).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise PvError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("steps"), list):
        raise PvError(f"{path}: not a pv generation record (format != {FORMAT!r})")
    for i, rec in enumerate(data["steps"]):
        if not (isinstance(rec, dict) and rec.get("step") == i and isinstance(rec.get("input"), list)
                and isinstance(rec.get("predicted"), int)):
            raise PvError(f"{path}: steps[{i}] is malformed")
    return data
