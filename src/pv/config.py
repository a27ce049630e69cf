"""A repository's pv settings: the ``[tool.pv]`` table of its ``pyproject.toml``.

There is one setting today, and it can only make the gate weaker, so it is
guarded like a claim:

- ``stale-evidence``: what a ``FUNCTIONAL`` or ``DISCHARGED`` status resting on
  stale evidence (a covered file or the claim changed since the record backing
  it ran) is worth. ``"fail"`` (the default): nothing; the status is unsupported
  and ``pv falsify`` lowers it to what fresh evidence supports. ``"warn"``: it
  stands, ``pv status`` marks it stale and leaves it out of its percentage. The
  weaker policy needs ``stale-evidence-by`` and ``stale-evidence-reason`` (who
  chose it and why), so the choice is visible in review and in every gate run.

An unknown key in ``[tool.pv]`` is an error, not ignored: a misspelt setting
must not quietly leave a repository with another policy than it chose.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.errors import PvError

FAIL, WARN = "fail", "warn"
STALE_POLICIES = (FAIL, WARN)
KEYS = ("stale-evidence", "stale-evidence-by", "stale-evidence-reason")
#: pyproject.toml files are small; anything bigger is refused before parsing.
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Settings:
    stale_evidence: str = FAIL
    #: Who chose a weaker stale-evidence policy, and why (both set when it is ``warn``).
    stale_by: str | None = None
    stale_reason: str | None = None
    #: Where the settings came from (for messages); None: the defaults.
    source: str | None = None

    @property
    def stale_blocks(self) -> bool:
        """A FUNCTIONAL or DISCHARGED status on stale evidence is unsupported."""
        return self.stale_evidence == FAIL

    def describe(self) -> str:
        if self.stale_blocks:
            return "stale evidence backs no FUNCTIONAL or DISCHARGED status"
        return (f"stale evidence policy {WARN} ({self.source}: chosen by {self.stale_by}: {self.stale_reason}): "
                "FUNCTIONAL and DISCHARGED statuses on stale evidence stand, marked stale")


#: The settings of a repository without ``[tool.pv]``.
DEFAULTS = Settings()


def _toml(raw: bytes, where: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PvError(f"{where}: not valid TOML: {exc}") from None
    return data


def parse(table: Any, where: str) -> Settings:
    """``Settings`` from a ``[tool.pv]`` table; one-line ``PvError`` for anything off."""
    if table is None:
        return Settings()
    if not isinstance(table, dict):
        raise PvError(f"{where}: [tool.pv] must be a table")
    unknown = sorted(str(k) for k in table if k not in KEYS)
    if unknown:
        import difflib

        guess = difflib.get_close_matches(unknown[0], KEYS, n=1, cutoff=0.6)
        hint = f"; did you mean '{guess[0]}'?" if guess else f" (known: {', '.join(KEYS)})"
        raise PvError(f"{where}: [tool.pv] has unknown key '{unknown[0]}'{hint}")
    policy = table.get("stale-evidence", FAIL)
    if policy not in STALE_POLICIES:
        raise PvError(f"{where}: [tool.pv] stale-evidence must be one of {', '.join(STALE_POLICIES)}, "
                      f"not {policy!r}")
    by, reason = table.get("stale-evidence-by"), table.get("stale-evidence-reason")
    for key, value in (("stale-evidence-by", by), ("stale-evidence-reason", reason)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise PvError(f"{where}: [tool.pv] {key} must be a non-empty string")
    if policy == WARN and (by is None or reason is None):
        raise PvError(f"{where}: [tool.pv] stale-evidence = \"warn\" weakens every FUNCTIONAL status: "
                      "set stale-evidence-by and stale-evidence-reason (who chose it and why)")
    return Settings(str(policy), by.strip() if by else None, " ".join(reason.split()) if reason else None, where)


def load(root: Path) -> Settings:
    """The settings of the repository at ``root`` (defaults when it has no ``[tool.pv]``)."""
    from pv.files import read_regular

    path = root / "pyproject.toml"
    if not path.is_file():
        return Settings()
    try:
        raw = read_regular(path, MAX_BYTES)
    except (OSError, ValueError) as exc:
        raise PvError(f"{path}: cannot read: {exc}") from None
    where = "pyproject.toml"
    tool = _toml(raw, where).get("tool")
    return parse(tool.get("pv") if isinstance(tool, dict) else None, where)


__all__ = ["DEFAULTS", "FAIL", "STALE_POLICIES", "WARN", "Settings", "load", "parse"]
