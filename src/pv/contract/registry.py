"""Binding registries: the ``binding.yaml`` files of the provable-contracts layout.

A binding registry is not a contract: it maps contract equations to the
functions that implement them (``target_crate``, ``bindings: [{contract,
equation, function, module_path, status}]``). It sits in a contracts folder, so
``pv validate DIR`` meets it; it is checked on its own terms instead of being
reported as a contract without ``metadata``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pv.contract.findings import ERROR, WARNING, Finding, KeyPath
from pv.contract.load import Document

RULE = "PV032"
_REQUIRED = ("contract", "equation")


def is_binding_registry(doc: Document) -> bool:
    """No ``metadata``, and a ``bindings`` list (or the conventional file name)."""
    if "metadata" in doc.data:
        return False
    return isinstance(doc.data.get("bindings"), list) or doc.path.name in ("binding.yaml",
                                                                          "binding.yml")


def check_registry(doc: Document) -> Iterator[Finding]:
    def finding(path: KeyPath, message: str, severity: str = ERROR) -> Finding:
        line, col = doc.locate(path)
        return Finding(str(doc.path), line, col, path, RULE, message, severity)

    bindings = doc.data.get("bindings")
    if not isinstance(bindings, list):
        yield finding(("bindings",) if "bindings" in doc.data else (),
                      "binding registry: 'bindings' must be a list of mappings "
                      "(contract, equation, function, module_path, status)")
        return
    for i, entry in enumerate(bindings):
        if not isinstance(entry, dict):
            yield finding(("bindings", i), f"binding registry: bindings[{i}] is not a mapping")
            continue
        missing = [k for k in _REQUIRED if not isinstance(entry.get(k), str) or not entry[k].strip()]
        if missing:
            keys = ", ".join(f"'{k}'" for k in missing)
            yield finding(("bindings", i), f"binding registry: bindings[{i}] has no {keys} "
                          "(a string naming what is bound)")
        elif not any(isinstance(entry.get(k), str) for k in ("function", "module_path")):
            yield finding(("bindings", i), f"binding registry: bindings[{i}] binds "
                          f"{entry['equation']} to no 'function' or 'module_path'", WARNING)
