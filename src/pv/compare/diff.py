"""Stage-by-stage comparison of two APRT files or two capture directories.

``a`` is the engine under test, ``b`` the reference. Every stage present on
both sides becomes one :class:`StageRecord`, in computation order; a stage on
one side only is recorded as such (it is a finding about the captures, not a
crash), and a pair that cannot be compared (counts, layers or shapes differ)
is an ``error`` record with the reason. The report is data: the CLI renders it
as a table or JSON, bisect walks it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.model.config import ModelConfig
from pv.capture.store import aprt, directory
from pv.compare import align, metrics, partial
from pv.compare.pair import compare_values, side_dtype
from pv.compare.records import ERROR, ONLY_A, ONLY_B, DiffReport, StageRecord
from pv.compare.tolerances import Tolerance, Tolerances
from pv.errors import PvError


def _config(model: Any) -> ModelConfig | None:
    if model is None or isinstance(model, ModelConfig):
        return model
    cfg = getattr(model, "config", None)
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(model, (str, Path)):
        from pv.capture.model.load import model_config

        return model_config(str(model))
    raise TypeError(f"model must be a ModelConfig, LoadedModel or spec, not {type(model).__name__}")


def compare_sides(
    a: align.Side,
    b: align.Side,
    *,
    config: ModelConfig | None,
    tolerances: Tolerances,
    top_k: int = 5,
    chunk: int = metrics.CHUNK,
    verify: bool = True,
) -> StageRecord:
    """Compare one pair of files into a record; never raises for a bad pair.

    ``verify``: a side whose manifest record names a digest is compared only if
    its bytes still have that digest (else the record is an error saying so).
    It is hashed from the chunks the metrics read, in their pass (``aprt.ValueReader``); only a
    pair that fails before its pass ends (shapes differ, a file changed size) is hashed apart.
    """
    try:  # a partial capture against a whole one: the whole side read as its cut
        ca, cb, ranges, which = partial.cut(a, b)
    except align.PairError as exc:
        return StageRecord(a.stage or b.stage, a.layer, ERROR, reasons=(str(exc),), path_a=str(a.path),
                           path_b=str(b.path))

    def values() -> tuple[metrics.Values, metrics.Values]:
        va, vb = _open_files(a, b, chunk, verify)
        if ranges is None:
            return va, vb
        return (partial.Gathered(va, ranges), vb) if which == 0 else (va, partial.Gathered(vb, ranges))

    rec = compare_values(ca, cb, values, config=config, tolerances=tolerances, top_k=top_k, chunk=chunk,
                         paths=(str(a.path), str(b.path)))
    told = {aprt.digest_mismatch(s.path, algorithm) for s in (a, b) for algorithm in aprt.DIGESTS} & set(rec.reasons)
    if verify and rec.status == ERROR and not told:
        with contextlib.suppress(OSError, PvError):  # else the record says what could not be read
            problem = aprt.digest_problem(a.path, a.meta) or aprt.digest_problem(b.path, b.meta)
            rec = replace(rec, reasons=(problem,)) if problem else rec
    return rec


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _open_files(a: align.Side, b: align.Side, chunk: int, verify: bool) -> tuple[aprt.ValueReader, aprt.ValueReader]:
    """Readers of both files, hashing their bytes with the digests their records name when ``verify``."""
    ra = aprt.ValueReader(a.path, a.meta if verify else None, chunk, expect=a.header)
    try:
        return ra, aprt.ValueReader(b.path, b.meta if verify else None, chunk, expect=b.header)
    except BaseException:
        ra.close()
        raise


def _side(entry: directory.Entry, manifest: dict[str, Any] | None) -> align.Side:
    return align.Side(
        entry.path,
        entry.stage,
        entry.layer,
        entry.header,
        entry.shape,
        entry.layout,
        side_dtype(entry.meta, manifest),
        entry.meta,
    )


def _open(path: str | Path | directory.Capture) -> directory.Capture:
    if isinstance(path, directory.Capture):
        return path
    return directory.open_capture(path)


def diff_captures(
    a: str | Path | directory.Capture,
    b: str | Path | directory.Capture,
    *,
    model: Any = None,
    tolerances: Tolerances | None = None,
    stages: Sequence[str] | None = None,
    top_k: int = 5,
    chunk: int = metrics.CHUNK,
    workers: int | None = None,
    verify: bool = True,
) -> DiffReport:
    """Compare two capture directories (``a`` under test, ``b`` reference), stage by stage.

    ``stages`` limits the comparison to those stage names; ``workers`` threads
    compare pairs concurrently (default: one per CPU, at most 4). With
    ``verify``, each compared file listed with a digest in its manifest must
    still have it (``compare_sides``). Raises PvError only when nothing could
    be compared at all.
    """
    ca, cb = _open(a), _open(b)
    partial.check_runs(ca.manifest, cb.manifest)
    config = _config(model)
    tols = tolerances or Tolerances()
    wanted = set(stages) if stages is not None else None
    ea, eb = ca.by_key(), cb.by_key()
    keys = ordered_keys(ea, eb, wanted)
    pairs = [k for k in keys if k in ea and k in eb]

    def one(key: tuple[str, int | None]) -> StageRecord:
        return compare_sides(
            _side(ea[key], ca.manifest),
            _side(eb[key], cb.manifest),
            config=config,
            tolerances=tols,
            top_k=top_k,
            chunk=chunk,
            verify=verify,
        )

    n_workers = max(1, min(workers if workers is not None else default_workers(), len(pairs)))
    if n_workers > 1:
        # numpy releases the GIL inside each pass, so stage pairs compare in parallel.
        from concurrent.futures import ThreadPoolExecutor

        # Largest tensors first (stable, so computation order among equals):
        # the last pair to finish is then a small one, not a lone big lm_head.
        order = sorted(pairs, key=lambda k: -ea[k].header.count)
        with ThreadPoolExecutor(n_workers) as pool:
            done = dict(zip(order, pool.map(one, order)))
    else:
        done = {k: one(k) for k in pairs}
    return assemble(ca, cb, keys, done, wanted, tols)


def ordered_keys(ea: Iterable[tuple[str, int | None]], eb: Iterable[tuple[str, int | None]],
                 wanted: set[str] | None) -> list[tuple[str, int | None]]:
    """Every (stage, layer) of either side, in computation order, limited to ``wanted`` stages."""
    keys = sorted(set(ea) | set(eb), key=lambda k: stage_table.sort_key(k[0], k[1]))
    return [k for k in keys if wanted is None or k[0] in wanted]


def assemble(ca: directory.Capture, cb: directory.Capture, keys: Sequence[tuple[str, int | None]],
             done: dict[tuple[str, int | None], StageRecord], wanted: set[str] | None,
             tols: Tolerances) -> DiffReport:
    """The report from the compared pairs (``done``) and the two sides' descriptions: one-sided
    stages, mask disagreements and notes. Captures on disk and runs compared in memory share it,
    so both give the same report."""
    ea, eb = ca.by_key(), cb.by_key()
    records: list[StageRecord] = []
    masks = _mask_disagreements(ea, eb, [k for k in keys if k in done])
    for key in keys:
        if key in done:
            rec = done[key]
            if key in masks and rec.bad:
                rec = replace(rec, reasons=(*rec.reasons, f"masks differ: A {masks[key][0]}, B {masks[key][1]}"))
            records.append(rec)
        elif key in ea:
            records.append(
                StageRecord(
                    key[0],
                    key[1],
                    ONLY_A,
                    path_a=str(ea[key].path),
                    reasons=("captured by A only",),
                )
            )
        else:
            records.append(
                StageRecord(
                    key[0],
                    key[1],
                    ONLY_B,
                    path_b=str(eb[key].path),
                    reasons=("captured by B only",),
                )
            )
    notes = list(_absent_notes(ca, cb, wanted))
    notes.extend(_mask_notes(masks))
    if not ca.entries:
        notes.append(f"A ({ca.root}) holds no APRT stage files")
    if not cb.entries:
        notes.append(f"B ({cb.root}) holds no APRT stage files")
    if not any(r.compared or r.status == ERROR for r in records):
        raise PvError(
            f"no stage pairs matched between {ca.root} and {cb.root}"
            + (f" ({'; '.join(notes)})" if notes else "")
            + ": nothing was compared"
        )
    if all(r.dtype is None for r in records if r.compared):
        notes.append(f"neither side records its dtype: judged with {tols.assume} tolerances")
    return DiffReport(str(ca.root), str(cb.root), tuple(records), tuple(notes), tols.to_dict())


def _mask_disagreements(ea: dict[directory.Key, directory.Entry], eb: dict[directory.Key, directory.Entry],
                        pairs: Iterable[directory.Key]) -> dict[directory.Key, tuple[str, str]]:
    """Pairs whose manifests record different attention masks (``causal`` against ``sliding_window:W``).

    An engine that ignores a model's sliding window (llama.cpp's llama graph on
    Mistral) differs from the reference at exactly these files; saying so turns
    a failing ``attn_softmax`` into a diagnosis.
    """
    out: dict[tuple[str, int | None], tuple[str, str]] = {}
    for key in pairs:
        ma, mb = ea[key].meta.get("mask"), eb[key].meta.get("mask")
        if isinstance(ma, str) and isinstance(mb, str) and ma != mb:
            out[key] = (ma, mb)
    return out


def _mask_notes(masks: dict[tuple[str, int | None], tuple[str, str]]) -> Iterable[str]:
    by_pair: dict[tuple[str, str], list[int]] = {}
    for (_, layer), pair in masks.items():
        by_pair.setdefault(pair, []).append(-1 if layer is None else layer)
    for (ma, mb), layers in by_pair.items():
        shown = sorted(set(layers))
        text = ", ".join(str(x) for x in shown[:8]) + (f" (+{len(shown) - 8} more)" if len(shown) > 8 else "")
        yield f"masks differ at layer(s) {text}: A records {ma}, B {mb}"


def _absent_notes(ca: directory.Capture, cb: directory.Capture, wanted: set[str] | None) -> Iterable[str]:
    present = {e.stage for e in ca.entries} | {e.stage for e in cb.entries}
    na = dict.fromkeys(ca.not_applicable) | dict.fromkeys(cb.not_applicable)
    absent = [
        s.name
        for s in stage_table.STAGES
        if s.name not in present and (wanted is None or s.name in wanted)
    ]
    if not present:
        return
    for name in absent:
        if name in na:
            yield f"{name}: not applicable to this model (skipped)"
    rest = [n for n in absent if n not in na]
    if rest:
        yield f"absent on both sides (skipped): {', '.join(rest)}"


def _file_side(path: Path) -> align.Side:
    header = aprt.read_header(path)
    key = stage_table.ALIASES.get(path.stem.lower(), path.stem.lower())
    stage = key if key in stage_table.BY_NAME else None
    layer: int | None = None
    if stage is not None and not stage_table.BY_NAME[stage].whole_model:
        layer = header.layer
    return align.Side(path, stage, layer, header)


def diff_files(
    a: str | Path,
    b: str | Path,
    *,
    model: Any = None,
    tolerances: Tolerances | None = None,
    top_k: int = 5,
) -> DiffReport:
    """Compare two single APRT files; the stage is read from the file name when it is one."""
    pa, pb = Path(a), Path(b)
    sa, sb = _file_side(pa), _file_side(pb)
    if sa.stage != sb.stage and sa.stage is not None and sb.stage is not None:
        record = StageRecord(
            sa.stage,
            sa.layer,
            ERROR,
            reasons=(f"stages differ: A is {sa.stage}, B is {sb.stage}",),
            path_a=str(pa),
            path_b=str(pb),
        )
    else:
        stage = sa.stage or sb.stage
        sa = align.Side(sa.path, stage, sa.layer if sa.stage else sb.layer, sa.header)
        sb = align.Side(sb.path, stage, sb.layer if sb.stage else sa.layer, sb.header)
        record = compare_sides(
            sa, sb, config=_config(model), tolerances=tolerances or Tolerances(), top_k=top_k
        )
    return DiffReport(str(pa), str(pb), (record,), (), (tolerances or Tolerances()).to_dict())


def diff_paths(a: str | Path, b: str | Path, **kwargs: Any) -> DiffReport:
    """Two files or two directories; anything else is an error naming the culprit."""
    pa, pb = Path(a), Path(b)
    for p in (pa, pb):
        if not p.exists():
            raise PvError(f"{p}: no such file or directory")
    if pa.is_dir() and pb.is_dir():
        return diff_captures(pa, pb, **kwargs)
    if not pa.is_dir() and not pb.is_dir():
        # Not only regular files: a FIFO or device is refused by the APRT reader, by name.
        kwargs.pop("stages", None)
        kwargs.pop("chunk", None)
        kwargs.pop("verify", None)  # single files have no manifest, so no digest
        return diff_files(pa, pb, **kwargs)

    def kind(p: Path) -> str:
        return "a directory" if p.is_dir() else "a file"

    raise PvError(
        f"cannot compare {kind(pa)} ({pa}) with {kind(pb)} ({pb}): give two files or two capture directories"
    )


def memory_side(stage: str, layer: int | None, values: np.ndarray, *, dtype: str | None = None,
                meta: dict[str, Any] | None = None, name: str = "<memory>") -> align.Side:
    """A tensor in memory as one side of a comparison (its shape read as the stage's layout)."""
    entry = stage_table.get(stage)
    layout = entry.layout
    shape = tuple(np.shape(values)) if np.ndim(values) == len(layout) else None
    header = aprt.Header(entry.header_layer(layer), int(np.size(values)))
    return align.Side(Path(name), stage, layer, header, shape, layout if shape else None, dtype, meta or {})


def compare_arrays(
    a: np.ndarray,
    b: np.ndarray,
    stage: str,
    layer: int | None,
    *,
    config: ModelConfig | None = None,
    tolerance: Tolerance,
) -> StageRecord:
    """Compare two in-memory tensors of one stage under one tolerance (``--isolate``)."""
    fa = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    fb = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    return compare_values(memory_side(stage, layer, a, name="<a>"), memory_side(stage, layer, b, name="<b>"),
                          lambda: (fa, fb), config=config, tolerance=tolerance)
