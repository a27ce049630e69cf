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
from pv.capture.tap import Part, Parts
from pv.compare import align
from pv.compare.diff import assemble, ordered_keys
from pv.compare.feed import Feed
from pv.compare.pair import OpenPair, open_pair, side_dtype
from pv.compare.records import ERROR, DiffReport, StageRecord
from pv.compare.stream_tap import Cancelled, Key, StreamTap, failed, run_side
from pv.compare.tolerances import Tolerances

#: Stages a runner may have queued before it waits for the comparator.
QUEUE_ITEMS = 2


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


@dataclass
class _Side:
    """One runner's stream as the comparator sees it."""

    label: str
    run: Mapping[str, Any]
    queue: queue.Queue[tuple[Any, ...]]
    thread: threading.Thread | None = None
    done: bool = False
    result: Any = None
    frontier: tuple[int, ...] | None = None
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


@dataclass(frozen=True)
class Streamed:
    """A stream comparison: the report (as ``pv diff`` would give it) and what each runner returned."""

    report: DiffReport
    result_a: Any
    result_b: Any


@dataclass
class _Pair:
    """One stage key as the comparator follows it: what each side handed over, the open comparison."""

    records: list[dict[str, Any] | None] = field(default_factory=lambda: [None, None])
    #: Pieces each side will hand over (its parts' count; 1 for a whole stage), and pieces taken.
    count: list[int] = field(default_factory=lambda: [0, 0])
    got: list[int] = field(default_factory=lambda: [0, 0])
    #: Pieces taken before both sides had begun the stage (the feed cannot exist before its view).
    waiting: tuple[list[tuple[np.ndarray, bool]], list[tuple[np.ndarray, bool]]] = field(
        default_factory=lambda: ([], []))
    opened: OpenPair | None = None
    feed: Feed | None = None
    closed: bool = False

    @property
    def held(self) -> int:
        return sum(v.nbytes for w in self.waiting for v, _ in w) + (self.feed.held if self.feed is not None else 0)


def _front(key: Key, part: Part | None = None) -> tuple[int, ...]:
    """Where a stage (or a part of one) lies in computation order. A layer's attention matrices
    handed over in parts interleave (each block's probabilities follow its scores): their parts
    sort at ``attn_scores``' place, by block, then by stage."""
    cat, layer, order = stage_table.sort_key(key[0], key[1])
    if part is None or key[0] not in _MATRICES:  # a stage in blocks of rows (lm_head) keeps its own place
        return (cat, layer, order, part.index if part is not None else 0, 0)
    return (cat, layer, min(order, _SCORES_ORDER), part.index, order)


_SCORES_ORDER = stage_table.get("attn_scores").order
_MATRICES = frozenset({"attn_scores", "attn_softmax"})


class Comparison:
    """Runs two runners on their own threads and compares their stages pair by pair.

    Every stage is measured as its values arrive (``pv.compare.feed.Feed``): a
    whole stage in one piece, a stage handed over in parts (``pv.capture.tap.Part``)
    part by part, so neither side's attention matrices need be whole at long S.
    ``on_take(label, key, values, record)`` sees every stage of either side as it
    is taken from its queue, a stage in parts once it is whole and only where
    ``whole(label, key)`` asks for it (``--isolate`` keeps the reference's
    current layer there); ``on_stage(label, stage, layer)`` is called on the runner's
    thread, for progress.
    """

    def __init__(self, plan: CapturePlan, *, config: Any, tolerances: Tolerances | None = None,
                 labels: tuple[str, str] = ("A", "B"), runs: tuple[Mapping[str, Any], Mapping[str, Any]] = ({}, {}),
                 on_stage: Callable[[str, str, int | None], None] | None = None,
                 on_take: Callable[[str, Key, np.ndarray, dict[str, Any]], None] | None = None,
                 whole: Callable[[str, Key], bool] | None = None) -> None:
        self.plan, self.config = plan, config
        self.tols = tolerances or Tolerances()
        self.on_stage, self.on_take = on_stage, on_take
        self.whole, self._assembled = whole, Parts()
        self.cancel = threading.Event()
        self.sides = tuple(_Side(label, run, queue.Queue(QUEUE_ITEMS)) for label, run in zip(labels, runs))
        self.pairs: dict[Key, _Pair] = {}
        self.done: dict[Key, StageRecord] = {}
        #: Most bytes of stage values the comparator held at once (taken and not yet measured on
        #: either side, plus the item in hand): what the bound on memory is about, whatever the
        #: model's depth or the sequence's length.
        self.peak_held = 0

    def run(self, fn_a: Callable[[StreamTap], Any], fn_b: Callable[[StreamTap], Any]) -> Streamed:
        """``fn_a(tap)`` and ``fn_b(tap)`` run a forward (or a decode step) handing stages to ``tap``."""
        from pv.capture.runtime import return_large_frees

        return_large_frees()  # two runners freeing large blocks on their own threads
        for side, fn in zip(self.sides, (fn_a, fn_b)):
            hook = None if self.on_stage is None else functools.partial(self.on_stage, side.label)
            tap = StreamTap(self.plan, side.queue, self.cancel, hook)
            tap.skips_masked = self.whole is None or not any(self.whole(side.label, (m, 0)) for m in _MATRICES)
            side.thread = threading.Thread(target=run_side, args=(fn, tap), name=f"pv-stream-{side.label}", daemon=True)
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
        for key in list(self.pairs):
            self._end_pair(key)
        a, b = self.sides
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
            raise failed(side.label, item[1])
        if kind == "end":
            side.done, side.result = True, item[1]
            x = self.sides.index(side)
            for key in [k for k, p in self.pairs.items() if p.records[x] is None]:
                self._end_pair(key)  # nothing more comes from here to pair them with
            return
        if kind == "na":
            side.not_applicable.setdefault(item[1], item[2])
            return
        _, key, values, private, record, part = item
        self.peak_held = max(self.peak_held, values.nbytes + sum(p.held for p in self.pairs.values()))
        x, other = self.sides.index(side), self._other(side)
        side.frontier = _front(key, part)
        pair = self.pairs.get(key)
        if pair is None:
            if key in self.done:  # a stage the comparator already closed: this side is too late for it
                return
            pair = self.pairs[key] = _Pair()
        if pair.records[x] is None:
            side.records.append(record)
            pair.records[x], pair.count[x] = record, part.count if part is not None else 1
            if key in other.dropped:
                self._close(key, ERROR, f"{side.label} handed {key[0]} over after {other.label} had moved past "
                                        "it: the two runners do not follow one computation order")
        pair.got[x] += 1
        # Values nobody else keeps may be masked in place by the feed.
        handed = self._hand_on(side, key, values, record, part)
        private = private and not handed
        if not pair.closed:
            if pair.feed is not None:
                pair.feed.add(x, values, private=private)
            else:
                pair.waiting[x].append((values, private))
                if None not in pair.records:
                    self._open(key, pair)
        if None not in pair.records and pair.got == pair.count:
            self._end_pair(key)
        # What the other side began before this side's place, this side has passed without
        # producing: it never comes, so those values go (the key stays, reported one-sided).
        y = 1 - x
        for k in [k for k, p in self.pairs.items() if p.records[x] is None and p.records[y] is not None
                  and _front(k) < side.frontier]:
            self._end_pair(k)

    def _hand_on(self, side: _Side, key: Key, values: np.ndarray, record: dict[str, Any], part: Part | None) -> bool:
        """Hands ``values`` to ``on_take`` where it asks for them; whether they went anywhere (then kept there)."""
        if self.on_take is None:
            return False
        if part is None:
            self.on_take(side.label, key, values, record)
            return True
        if self.whole is not None and self.whole(side.label, key):
            whole = self._assembled.add(f"{side.label}:{key[0]}", key[1], values, part)
            if whole is not None:
                self.on_take(side.label, key, whole, record)
            return True
        return False

    def _open(self, key: Key, pair: _Pair) -> None:
        a, b = self.sides
        ra, rb = pair.records
        assert ra is not None and rb is not None
        opened = open_pair(self._side(key, ra, a.run, a.label), self._side(key, rb, b.run, b.label),
                           config=self.config, tolerances=self.tols)
        if isinstance(opened, StageRecord):
            self.done[key], pair.closed = opened, True
            pair.waiting[0].clear()
            pair.waiting[1].clear()
            return
        pair.opened, pair.feed = opened, Feed(opened.view)
        for x in (0, 1):
            waiting = pair.waiting[x]
            while waiting:
                values, private = waiting.pop(0)
                pair.feed.add(x, values, private=private)

    def _end_pair(self, key: Key) -> None:
        """``key`` will get nothing more: measured when both sides handed it over whole, one-sided
        when only one did, an error when a side stopped part way."""
        pair = self.pairs.pop(key)
        if pair.closed:
            return
        if None in pair.records:
            gone = self.sides[pair.records.index(None) ^ 1]
            gone.dropped.add(key)
            return
        assert pair.opened is not None and pair.feed is not None
        short = [f"{s.label} handed over {g} of its {c} parts" for s, g, c in zip(self.sides, pair.got, pair.count)
                 if g < c]
        try:
            measured = pair.feed.finish()
        except ValueError as exc:
            short.append(str(exc))
        self.done[key] = pair.opened.close(None if short else measured, "; ".join(short) or None)

    def _close(self, key: Key, status: str, reason: str) -> None:
        self.done[key] = StageRecord(key[0], key[1], status, reasons=(reason,))
        pair = self.pairs[key]
        pair.closed = True
        pair.waiting[0].clear()
        pair.waiting[1].clear()
        pair.feed = None

    @staticmethod
    def fired(side: _Side) -> set[Key]:
        """The (stage, layer) keys a side handed over."""
        return {(r["stage"], r["layer"]) for r in side.records}

    def _other(self, side: _Side) -> _Side:
        return self.sides[1] if side is self.sides[0] else self.sides[0]

    @staticmethod
    def _side(key: Key, record: dict[str, Any], run: Mapping[str, Any], label: str) -> align.Side:
        st = stage_table.get(key[0])
        shape = tuple(int(x) for x in record["shape"])
        return align.Side(Path(label) / relpath_for(st.name, key[1]), st.name, key[1],
                          aprt.Header(st.header_layer(key[1]), int(np.prod(shape, dtype=np.int64))), shape,
                          tuple(record["layout"]), side_dtype(record, {"run": dict(run)}), record)


__all__ = ["QUEUE_ITEMS", "Cancelled", "Comparison", "Key", "Progress", "StreamTap", "Streamed", "progress_line"]
