"""``validate_paths``: load, check and report on a set of contract files.

Per file: one fast parse, the typed models as a fast structural check (the
jsonschema walk, which names every violation, runs only when they reject the
file), then the semantic rules. Many files are spread over a process pool, one
worker per core. Rules that need the whole set (ids unique across files) run in
the parent on the small summaries workers send back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pv.contract import graph, references, registry
from pv.contract.discover import find_contracts, repo_root
from pv.contract.findings import ERROR, WARNING, Finding, display_path
from pv.contract.fix import Fix, fix_paths
from pv.contract.load import ContractLoadError, Document, load_document
from pv.contract.model import Contract, from_document
from pv.contract.rulebase import RuleContext
from pv.contract.rules import check_document
from pv.contract.schema import RULE as SCHEMA_RULE
from pv.contract.schema import schema_errors
from pv.contract.structure import conforms

#: Rules whose finding replaces the schema's for the same key.
EXPLAINS_SCHEMA = frozenset({"PV034"})
#: Below this many files a pool costs more than it saves.
PARALLEL_MIN_FILES = 48


@dataclass(frozen=True)
class FileResult:
    file: str
    findings: tuple[Finding, ...]
    contract: Contract | None


@dataclass(frozen=True)
class Report:
    files: int
    findings: tuple[Finding, ...]
    contracts: tuple[Contract, ...] = field(default=())
    strict: bool = False
    #: What ``fix=True`` changed before validating (``pv validate --fix``).
    fixes: tuple[Fix, ...] = ()

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def files_with_errors(self) -> int:
        return len({f.file for f in self.findings if f.severity == ERROR})

    def summary(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"

        verdict = "ok" if self.ok else "FAILED"
        moved = sum(1 for f in self.findings if f.rule == "PV025")
        elsewhere = (f"; {plural(moved, 'status')} under keys pv does not read (pv validate "
                     "--fix renames what it can)" if moved else "")
        return (f"{verdict}: {plural(self.files, 'file')} checked, "
                f"{plural(self.errors, 'error')}, {plural(self.warnings, 'warning')}"
                f"{' (strict)' if self.strict else ''}{elsewhere}")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "files": self.files, "errors": self.errors,
            "warnings": self.warnings, "strict": self.strict,
            "statuses_elsewhere": sum(1 for f in self.findings if f.rule == "PV025"),
            "findings": [f.to_json() for f in self.findings],
            "contracts": [c.to_json() for c in self.contracts],
            "fixes": [f.to_json() for f in self.fixes],
        }


def _summary(doc: Document, ctx: RuleContext, errors: int) -> Contract:
    """The contract's one view (``pv.contract.model``), with what only validation knows: the
    references a contract id may resolve and how many errors the file has."""
    contract = from_document(doc)
    open_refs = tuple((value, (path, *doc.locate(path)), what)
                      for value, path, what in ctx.extra.get("open_refs", ()))
    # The data goes: a run over thousands of files keeps every view, and what only the claim
    # needs is read again from the text if anyone asks.
    return replace(contract, open_refs=open_refs, errors=errors, data=None)


def check_file(path: Path, check_evidence: bool | None) -> FileResult:
    """Every finding for one file; never raises for bad input."""
    try:
        doc = load_document(path)
    except ContractLoadError as exc:
        return FileResult(str(path), (exc.finding,), None)
    if registry.is_binding_registry(doc):
        return FileResult(str(path), tuple(registry.check_registry(doc)), None)
    findings: list[Finding] = []
    if not conforms(doc.data):
        for key_path, message, severity in schema_errors(doc.data):
            line, col = doc.locate(key_path)
            findings.append(Finding(str(path), line, col, key_path, SCHEMA_RULE, message, severity))
    root = repo_root(path.parent)
    if check_evidence and root is None:
        root = Path.cwd()
    ctx = RuleContext(repo_root=root, check_evidence=bool(check_evidence if check_evidence
                                                          is not None else root is not None))
    semantic = list(check_document(doc, ctx))
    # A key a rule explains precisely (PV034: a fact pv does not measure) is not
    # reported again as a generic schema violation ("unknown key; allowed here: ...").
    explained = {f.path for f in semantic if f.rule in EXPLAINS_SCHEMA}
    findings = [f for f in findings if not (f.rule == SCHEMA_RULE and f.path in explained)]
    findings.extend(semantic)
    errors = sum(1 for f in findings if f.severity == ERROR)
    return FileResult(str(path), tuple(findings), _summary(doc, ctx, errors))


#: Allocations between two youngest-generation collections while a batch is checked.
BATCH_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def _long_lived_results() -> Iterator[None]:
    """Collect garbage less often while a batch of files is checked.

    Every file leaves one ``Contract`` view (a few dozen objects) that lives until
    the set rules have run; with the default threshold (a collection every 700
    allocations) the older generations holding thousands of them are scanned again
    and again, which cost a third of ``pv validate``'s time on 2,000 files. What a
    file allocates besides its view is freed by reference counting, so collecting
    less often keeps memory flat. The threshold is restored afterwards.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], BATCH_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _check_chunk(paths: Sequence[Path], check_evidence: bool | None) -> list[FileResult]:
    with _long_lived_results():
        return [check_file(p, check_evidence) for p in paths]


def _workers() -> int:
    """One worker per idle core, at least one.

    Cores busy with other work (the load average, less this process) make extra
    workers slower, not faster: on a shared CI runner two workers fighting for
    one free core lose to one. ``jobs=`` / ``pv validate -j`` overrides this.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def _check_all(paths: list[Path], check_evidence: bool | None, jobs: int | None) -> list[FileResult]:
    jobs = min(jobs or _workers(), 8)
    if jobs < 2 or len(paths) < PARALLEL_MIN_FILES:
        return _check_chunk(paths, check_evidence)
    # Fork where available: workers inherit the imported modules and schema, so
    # they start in milliseconds. Several chunks per worker balance uneven files.
    method = "fork" if sys.platform.startswith("linux") else None
    ctx = multiprocessing.get_context(method)
    n_chunks = jobs * 4
    chunks = [paths[i::n_chunks] for i in range(n_chunks)]
    chunks = [c for c in chunks if c]
    results: dict[str, FileResult] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for chunk_results in pool.map(_check_chunk, chunks, [check_evidence] * len(chunks)):
            for result in chunk_results:
                results[result.file] = result
    return [results[str(p)] for p in paths]


def _set_rules(summaries: list[Contract]) -> list[Finding]:
    """Rules over the whole validated set: ids unique, dependencies and contract references
    resolve, dependencies form no cycle."""
    findings: list[Finding] = []
    first_falsifier: dict[str, str] = {}
    for summary in summaries:
        seen_here: set[str] = set()
        for fid, (key, line, col) in ((f.id, f.at) for f in summary.falsifiers):
            if fid in seen_here:
                continue  # a repeat inside one file is PV014's finding
            seen_here.add(fid)
            other = first_falsifier.setdefault(fid, summary.file)
            if other != summary.file:
                findings.append(Finding(summary.file, line, col, key, "PV015",
                                        f"falsifier id {fid} is also defined in "
                                        f"{display_path(other)}; a @pytest.mark.falsifies "
                                        "marker names the id alone, so it would bind a test to "
                                        "both (ids need only be unique within a contract)", WARNING))
    first_contract: dict[str, str] = {}
    for summary in summaries:
        other = first_contract.setdefault(summary.id, summary.file)
        if other != summary.file:
            key, line, col = summary.id_at
            findings.append(Finding(summary.file, line, col, key, "PV024",
                                    f"contract id {summary.id} is also the id of "
                                    f"{display_path(other)}"))
    findings.extend(references.set_references(summaries, first_contract))
    findings.extend(graph.cycle_findings(summaries))
    return findings


def validate_files(files: Iterable[Path], *, strict: bool = False,
                   check_evidence: bool | None = None, jobs: int | None = None) -> Report:
    """Validate exactly these files (no discovery)."""
    paths = list(files)
    results = _check_all(paths, check_evidence, jobs)
    findings = [f for r in results for f in r.findings]
    summaries = [r.contract for r in results if r.contract is not None]
    findings.extend(_set_rules(summaries))
    if strict:
        findings = [f.strict() for f in findings]
    order = {str(p): i for i, p in enumerate(paths)}
    findings.sort(key=lambda f: (order.get(f.file, len(order)), f.line, f.column, f.rule))
    return Report(len(paths), tuple(findings), tuple(summaries), strict)


def validate_paths(paths: Iterable[str | os.PathLike[str]], *, strict: bool = False,
                   check_evidence: bool | None = None, jobs: int | None = None, fix: bool = False,
                   evidence_dir: Path | None = None) -> Report:
    """Discover contracts under ``paths`` and validate them.

    ``check_evidence``: None checks evidence when the file sits in a git checkout
    (paths resolve from its root); True forces it (falling back to the current
    directory as root); False skips it. ``fix``: first make the safe fixes
    (``pv.contract.fix``), under each contract's lock in ``evidence_dir``. Raises
    ``PvError`` for a usage error.
    """
    paths = list(paths)
    fixes = tuple(fix_paths(paths, evidence_dir)) if fix else ()
    report = validate_files(find_contracts(paths), strict=strict, check_evidence=check_evidence, jobs=jobs)
    return replace(report, fixes=fixes)


def validation_note(path: str | os.PathLike[str]) -> str | None:
    """One line for reports (``pv status``) when a contract fails ``pv validate``, else None.

    Only errors count; the first is quoted, so a reader knows where to look.
    """
    result = check_file(Path(path), None)
    errors = sorted((f for f in result.findings if f.severity == ERROR), key=lambda f: (f.line, f.column))
    if not errors:
        return None
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"fails pv validate: line {first.line}: {first.rule} {first.message}{more}"


def validation_note_for(shown: str) -> str | None:
    """``validation_note`` for a path as reports show it: relative to the repository root
    (the current checkout), or absolute. None when the file cannot be found."""
    path = Path(shown)
    if not path.is_absolute():
        root = repo_root(Path.cwd())
        path = (root or Path.cwd()) / path
    if not path.is_file():
        return None
    return validation_note(path)
