"""Comparing two runners while they run: each stage pair measured in memory as it is produced.

Each runner computes on its own thread and hands every stage to a
``StreamTap``, which puts a float32 host copy on a bounded queue; the caller's
thread takes stages from both queues in computation order, compares each pair
the moment both sides have produced it (``pv.compare.diff.compare_values``,
the comparison ``pv diff`` makes of two files) and drops the values. Nothing
is written. The queues hold ``QUEUE_ITEMS`` stages per side and the
comparator always takes from the side that is behind, so the runner ahead
waits on its full queue: memory stays near a few stages per side whatever the
number of layers or the length of the sequence.

What each side produced is kept as it would be on disk, without the values:
a ``Capture`` description per side (the records a manifest would hold), so the
report is assembled by the very function that assembles ``pv diff``'s
(``pv.compare.diff.assemble``) and equals the exhaustive walk over two full
captures in every row but the file paths, which do not exist.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.plan import CapturePlan
from pv.capture.store import aprt, directory
from pv.capture.store.directory import relpath_for
from pv.compare import align
from pv.compare.diff import _side_dtype, assemble, compare_values, ordered_keys
from pv.compare.records import ERROR, DiffReport, StageRecord
from pv.compare.tolerances import Tolerances
from pv.errors import PvError

#: Stages a runner may have queued before it waits for the comparator.
QUEUE_ITEMS = 2
Key = tuple[str, int | None]


#: ``progress(label, unit=...)`` -> a context manager with ``step(stage, layer)``: how a caller
#: shows a long phase (``pv bisect`` passes ``pv.report.progress.Progress``, a stderr line; the
#: unit is ``files`` written, or ``stages`` compared); None shows nothing.
Progress = Callable[..., AbstractContextManager[Any]]


class _Quiet:
    def step(self, stage: str, layer: int | None) -> None:
        pass


def progress_line(progress: Progress | None, label: str, unit: str = "files") -> AbstractContextManager[Any]:
    """``progress``'s line for a phase, or a quiet one."""
    return progress(label, unit=unit) if progress is not None else nullcontext(_Quiet())


class Cancelled(Exception):
    """Raised inside a runner's thread when the comparison stopped (an error, an interrupt)."""


class StreamTap:
    """A tap (``pv.capture.tap.Tap``) that puts each wanted stage on a bounded queue."""

    borrow = False

    def __init__(self, plan: CapturePlan, q: queue.Queue[tuple[Any, ...]], cancel: threading.Event,
                 on_stage: Callable[[str, int | None], None] | None = None) -> None:
        self.plan, self.queue, self.cancel = plan, q, cancel
        self.on_stage = on_stage
        self.fired: set[Key] = set()

    def wants(self, stage: str, layer: int | None) -> bool:
        if self.cancel.is_set():
            raise Cancelled
        return self.plan.wants(stage, layer)

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        if not self.wants(stage, layer):
            return
        st = stage_table.get(stage)
        # As a capture directory keys them: the embedding as layer 0, other whole-model stages as None.
        key: Key = (st.name, 0 if st.name == "embedding" else None if st.whole_model else layer)
        if key in self.fired:
            raise PvError(f"stage {stage} layer {layer} was handed over twice in one forward")
        self.fired.add(key)
        import torch

        values = tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).numpy()
        record = {"stage": st.name, "layer": key[1], "shape": [int(x) for x in values.shape],
                  "layout": list(st.layout), "mask": st.mask,
                  "dtype_captured": str(tensor.dtype).replace("torch.", ""), "device_captured": str(tensor.device),
                  "provenance": "observed"}
        record.update(meta)
        self.put(("stage", key, values, record))
        if self.on_stage is not None:
            self.on_stage(st.name, key[1])

    def not_applicable(self, stage: str, reason: str) -> None:
        self.put(("na", stage_table.get(stage).name, reason))

    def put(self, item: tuple[Any, ...]) -> None:
        while True:
            if self.cancel.is_set():
                raise Cancelled
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue


@dataclass
class _Side:
    """One runner's stream as the comparator sees it."""

    label: str
    run: Mapping[str, Any]
    queue: queue.Queue[tuple[Any, ...]]
    thread: threading.Thread | None = None
    done: bool = False
    result: Any = None
    frontier: tuple[int, int, int] | None = None
    #: Stages produced and not yet paired: values kept until the other side catches up.
    pending: dict[Key, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    #: Keys whose values were dropped unpaired (the other side was already past them).
    dropped: set[Key] = field(default_factory=set)
    records: list[dict[str, Any]] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def capture(self) -> directory.Capture:
        """What this side produced, described as a capture directory's manifest would describe it."""
        entries = []
        for rec in self.records:
            st = stage_table.get(rec["stage"])
            count = int(np.prod(rec["shape"], dtype=np.int64))
            entries.append(directory.Entry(st.name, rec["layer"], Path(self.label) / relpath_for(st.name, rec["layer"]),
                                           aprt.Header(st.header_layer(rec["layer"]), count), tuple(rec["shape"]),
                                           tuple(rec["layout"]), rec))
        return directory.Capture(Path(self.label), tuple(entries), {"run": dict(self.run), "files": self.records},
                                 tuple(self.not_applicable))


def _run(fn: Callable[[StreamTap], Any], tap: StreamTap) -> None:
    try:
        result = fn(tap)
        tap.put(("end", result))
    except Cancelled:
        pass
    except BaseException as exc:  # noqa: BLE001 - handed to the comparator's thread, which raises it
        try:
            tap.put(("error", exc))
        except Cancelled:
            pass


def _failed(label: str, exc: BaseException) -> BaseException:
    """A runner's exception as the comparison reports it: pv's own errors as they are, running out
    of memory (the host's or a GPU's) as one line naming the side."""
    if isinstance(exc, PvError):
        return exc
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        text = str(exc).splitlines()[0] if str(exc) else "no detail"
        return PvError(f"{label} ran out of memory ({type(exc).__name__}: {text[:200]}); try fewer tokens, "
                       "--positions/--heads, or a device with more memory")
    return exc


@dataclass(frozen=True)
class Streamed:
    """A stream comparison: the report (as ``pv diff`` would give it) and what each runner returned."""

    report: DiffReport
    result_a: Any
    result_b: Any


class Comparison:
    """Runs two runners on their own threads and compares their stages pair by pair.

    ``on_take(label, key, values, record)`` sees every stage of either side as it
    is taken from its queue (``--isolate`` keeps the reference's current layer
    there); ``on_pair(key, record, values_a, values_b)`` each compared pair;
    ``on_stage(label, stage, layer)`` is called on the runner's thread, for progress.
    """

    def __init__(self, plan: CapturePlan, *, config: Any, tolerances: Tolerances | None = None,
                 labels: tuple[str, str] = ("A", "B"), runs: tuple[Mapping[str, Any], Mapping[str, Any]] = ({}, {}),
                 on_pair: Callable[[Key, StageRecord, np.ndarray, np.ndarray], None] | None = None,
                 on_stage: Callable[[str, str, int | None], None] | None = None,
                 on_take: Callable[[str, Key, np.ndarray, dict[str, Any]], None] | None = None) -> None:
        self.plan, self.config = plan, config
        self.tols = tolerances or Tolerances()
        self.on_pair, self.on_stage, self.on_take = on_pair, on_stage, on_take
        self.cancel = threading.Event()
        self.sides = tuple(_Side(label, run, queue.Queue(QUEUE_ITEMS)) for label, run in zip(labels, runs))
        self.done: dict[Key, StageRecord] = {}
        #: Most bytes of stage values the comparator held at once (pending on either side, plus
        #: the item in hand): what the bound on memory is about, whatever the model's depth.
        self.peak_held = 0

    def run(self, fn_a: Callable[[StreamTap], Any], fn_b: Callable[[StreamTap], Any]) -> Streamed:
        """``fn_a(tap)`` and ``fn_b(tap)`` run a forward (or a decode step) handing stages to ``tap``."""
        for side, fn in zip(self.sides, (fn_a, fn_b)):
            hook = None if self.on_stage is None else functools.partial(self.on_stage, side.label)
            tap = StreamTap(self.plan, side.queue, self.cancel, hook)
            side.thread = threading.Thread(target=_run, args=(fn, tap), name=f"pv-stream-{side.label}", daemon=True)
            side.thread.start()
        try:
            while not all(s.done for s in self.sides):
                self._take(self._behind())
        except BaseException:
            self.cancel.set()
            raise
        finally:
            for side in self.sides:
                if side.thread is not None:
                    side.thread.join()
        a, b = self.sides
        for side in (a, b):
            for key in list(side.pending):
                self._unpaired(side, key)
        ca, cb = a.capture(), b.capture()
        keys = ordered_keys(ca.by_key(), cb.by_key(), None)
        return Streamed(assemble(ca, cb, keys, self.done, None, self.tols), a.result, b.result)

    def _behind(self) -> _Side:
        """The side to take from next: the unfinished one whose last stage comes first."""
        open_sides = [s for s in self.sides if not s.done]
        if len(open_sides) == 1:
            return open_sides[0]
        a, b = open_sides
        if a.frontier is None:
            return a
        if b.frontier is None:
            return b
        return a if a.frontier <= b.frontier else b

    def _take(self, side: _Side) -> None:
        item = side.queue.get()
        kind = item[0]
        if kind == "error":
            raise _failed(side.label, item[1])
        if kind == "end":
            side.done, side.result = True, item[1]
            other = self._other(side)
            for key in list(other.pending):  # nothing more comes from here to pair them with
                self._unpaired(other, key)
            return
        if kind == "na":
            side.not_applicable.setdefault(item[1], item[2])
            return
        _, key, values, record = item
        held = values.nbytes + sum(v.nbytes for s in self.sides for v, _ in s.pending.values())
        self.peak_held = max(self.peak_held, held)
        side.records.append(record)
        if self.on_take is not None:
            self.on_take(side.label, key, values, record)
        side.frontier = stage_table.sort_key(key[0], key[1])
        other = self._other(side)
        if key in other.pending:
            theirs, their_record = other.pending.pop(key)
            if side is self.sides[0]:
                self._compare(key, values, record, theirs, their_record)
            else:
                self._compare(key, theirs, their_record, values, record)
        elif key in other.dropped:
            self.done[key] = StageRecord(key[0], key[1], ERROR, reasons=(
                (f"{side.label} handed {key[0]} over after {other.label} had moved past it: the two runners do "
                "not follow one computation order"),))
        else:
            side.pending[key] = (values, record)
        # What the other side holds from before this side's stage, this side has passed without
        # producing: it never comes, so those values go (the key stays, reported one-sided).
        for k in [k for k in other.pending if stage_table.sort_key(k[0], k[1]) < side.frontier]:
            self._unpaired(other, k)

    @staticmethod
    def fired(side: _Side) -> set[Key]:
        """The (stage, layer) keys a side handed over."""
        return {(r["stage"], r["layer"]) for r in side.records}

    def _unpaired(self, side: _Side, key: Key) -> None:
        del side.pending[key]
        side.dropped.add(key)

    def _other(self, side: _Side) -> _Side:
        return self.sides[1] if side is self.sides[0] else self.sides[0]

    def _compare(self, key: Key, va: np.ndarray, ra: dict[str, Any], vb: np.ndarray, rb: dict[str, Any]) -> None:
        a, b = self.sides
        sa = self._side(key, va, ra, a.run, a.label)
        sb = self._side(key, vb, rb, b.run, b.label)
        rec = compare_values(sa, sb, lambda: (va.reshape(-1), vb.reshape(-1)), config=self.config,
                             tolerances=self.tols)
        self.done[key] = rec
        if self.on_pair is not None:
            self.on_pair(key, rec, va, vb)

    @staticmethod
    def _side(key: Key, values: np.ndarray, record: dict[str, Any], run: Mapping[str, Any], label: str) -> align.Side:
        st = stage_table.get(key[0])
        return align.Side(Path(label) / relpath_for(st.name, key[1]), st.name, key[1],
                          aprt.Header(st.header_layer(key[1]), int(values.size)), tuple(values.shape),
                          tuple(record["layout"]), _side_dtype(record, {"run": dict(run)}), record)


__all__ = ["QUEUE_ITEMS", "Cancelled", "Comparison", "Progress", "StreamTap", "Streamed", "progress_line"]
