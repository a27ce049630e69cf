"""``pv acknowledge``: record who accepted a weaker claim, and why, in the contract itself.

The gate fails a contract that claims less than its baseline (``pv.contract.claims``)
until the change carries an acknowledgement: an entry of the contract's top-level
``claim_changes`` list naming who (``by``), why (``reason``), when (``date``), what
was weakened (``changes``, for reviewers) and the sha256 of the claim it accepts
(``claim``). Binding the entry to that digest makes it cover exactly the claim as it
stood when it was written: a later edit that weakens the claim again needs another.

The entry is added to the text (appended to a block ``claim_changes`` list, or as a
new list at the end of the file), every other byte unchanged; the result is parsed
again and must equal the old data plus that one entry before it replaces the file
atomically, under the same lock ``pv falsify`` takes on the contract.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pv import files, repo, safeyaml
from pv.contract import claims
from pv.contract.model import Contract, load_contract, load_contracts, select
from pv.errors import PvError
from pv.report import baseline as baselines


@dataclass(frozen=True)
class Acknowledged:
    """What ``pv acknowledge`` wrote: the ``claim_changes`` entry, the weaker claims it accepts,
    and the baseline they were found against."""

    contract: Contract
    baseline: str
    weakenings: tuple[claims.Weakening, ...]
    entry: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"contract": self.contract.id, "file": str(self.contract.path), "baseline": self.baseline,
                "weakenings": [w.format() for w in self.weakenings], "entry": dict(self.entry)}


def _quoted(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(value, ensure_ascii=False)


def entry_text(entry: dict[str, Any], indent: str, nl: str) -> str:
    inner = indent + "  "
    lines = [f"{indent}- by: {_quoted(entry['by'])}", f"{inner}reason: {_quoted(entry['reason'])}",
             f"{inner}date: {_quoted(entry['date'])}", f"{inner}claim: {entry['claim']}", f"{inner}changes:"]
    lines += [f"{inner}  - {_quoted(change)}" for change in entry["changes"]]
    return nl.join(lines) + nl


def add_entry(text: str, entry: dict[str, Any], where: str) -> str:
    """``text`` with ``entry`` appended to its ``claim_changes`` (created when absent); a
    byte-order mark is set aside while the place is found (the loader's marks do not count it)."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    return bom + _add_entry(text[len(bom):], entry, where)


def _add_entry(text: str, entry: dict[str, Any], where: str) -> str:
    from pv.contract.load import parse_text

    nl = "\r\n" if "\r\n" in text else "\n"
    try:
        before = parse_text(Path(where), text).data
        root = safeyaml.compose(text)
    except (PvError, yaml.YAMLError) as exc:
        raise PvError(f"refusing to rewrite {where}: {str(exc).splitlines()[0]}") from None
    if not isinstance(root, yaml.MappingNode):
        raise PvError(f"{where}: the document is not a mapping")
    node = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == claims.CHANGES_KEY),
                None)
    if node is None:
        out = text + ("" if text.endswith(("\n", "\r")) or not text else nl)
        out += f"{nl}{claims.CHANGES_KEY}:{nl}" + entry_text(entry, "  ", nl)
    elif isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        first, last = node.value[0], node.value[-1]
        dash = text.rfind("-", 0, first.start_mark.index)
        indent = " " * (dash - (text.rfind("\n", 0, dash) + 1))
        end = last.end_mark.index
        if end > 0 and text[end - 1] == "\n":
            at = end
        else:
            line_end = text.find("\n", end)
            at = len(text) if line_end < 0 else line_end + 1
        prefix = nl if at == len(text) and not text.endswith("\n") else ""
        out = text[:at] + prefix + entry_text(entry, indent, nl) + text[at:]
    else:
        raise PvError(f"{where}: {claims.CHANGES_KEY} is not a block list of entries; write it as one "
                      "('- by: ...' items) and run pv acknowledge again")
    after = parse_text(Path(where), out).data
    expected = dict(before)
    expected[claims.CHANGES_KEY] = [*(before.get(claims.CHANGES_KEY) or []), entry]
    if after != expected:
        raise PvError(f"{where}: adding the acknowledgement would change more than {claims.CHANGES_KEY}; "
                      "file left as is")
    return out


def acknowledge(contract_id: str, *, by: str, reason: str, baseline: str | None = None,
                contract_paths: Sequence[Path] = (), root: Path | None = None,
                evidence_dir: Path | None = None, today: str | None = None) -> Acknowledged:
    """Add an acknowledgement of the contract's weaker claim (against ``baseline``) to its file."""
    if not by.strip() or not reason.strip():
        raise PvError("--by and --reason must say who accepts the weaker claim and why")
    root = root or repo.repo_root()
    dirs = list(contract_paths) or [root / "contracts"]
    contract = _find(dirs, contract_id)
    ref = baseline if baseline is not None else baselines.default_ref(root)
    if ref is None:
        raise PvError("no baseline to compare with (no earlier commit): a new claim needs no acknowledgement")
    if Path(ref).is_file():
        base = baselines.from_file(Path(ref))
    else:
        base = baselines.from_git(root, ref, [contract.path.parent])
    old = (base.claims or {}).get(contract.id)
    if old is None:
        raise PvError(f"nothing to acknowledge: {contract.id} is not in the baseline {base.label} "
                      "(a new contract claims nothing less)")
    found = claims.weakenings(old, contract.claim)
    if not found:
        raise PvError(f"nothing to acknowledge: the claim of {contract.id} is not weaker than at {base.label}")
    digest = contract.claim_digest
    done = next((a for a in contract.acknowledgements if a.claim == digest), None)
    if done is not None:
        raise PvError(f"this claim of {contract.id} is already acknowledged by {done.by} ({done.reason})")
    entry = {"by": " ".join(by.split()), "reason": " ".join(reason.split()),
             "date": today or datetime.now(timezone.utc).strftime("%Y-%m-%d"), "claim": digest,
             "changes": [w.format() for w in found]}
    with files.contract_locked(evidence_dir or root / "evidence", contract.id):
        text = _read(contract.path)
        files.replace_bytes(contract.path, add_entry(text, entry, str(contract.path)).encode("utf-8"))
    return Acknowledged(contract, base.label, tuple(found), entry)


def _find(dirs: Sequence[Path], contract_id: str) -> Contract:
    target = Path(contract_id)
    if target.suffix in (".yaml", ".yml") and target.is_file():
        return load_contract(target.resolve())
    return select(load_contracts(dirs), contract_id)


def _read(path: Path) -> str:
    try:
        return files.read_regular(path, 2 << 20).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise PvError(f"{path}: cannot read contract: {exc}") from None


__all__ = ["Acknowledged", "acknowledge", "add_entry"]
