"""The tap each runner of a streamed comparison hands its stages to, and the runner's thread.

``StreamTap`` puts a float32 host copy of each wanted stage (or part of one,
``pv.capture.tap.Part``) on a bounded queue; ``run_side`` runs a runner on its
own thread and ends its stream with its result or its error. The comparator
(``pv.compare.stream.Comparison``) takes from the queues.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.plan import CapturePlan
from pv.capture.tap import Part, row_blocks
from pv.errors import PvError

Key = tuple[str, int | None]


class Cancelled(Exception):
    """Raised inside a runner's thread when the comparison stopped (an error, an interrupt)."""


class StreamTap:
    """A tap (``pv.capture.tap.Tap``) that puts each wanted stage on a bounded queue."""

    borrow = False
    #: The comparison masks what the causal rule hides and never reads it (``pv.capture.causal``);
    #: False for a side whose whole stages are kept (``--isolate``'s reference).
    skips_masked = True

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
        part: Part | None = meta.pop("part", None)
        own = bool(meta.pop("own", False))
        if part is None or part.index == 0:
            if key in self.fired:
                raise PvError(f"stage {stage} layer {layer} was handed over twice in one forward")
            self.fired.add(key)
        src = tensor.detach()
        shape = part.shape if part is not None else tuple(int(x) for x in src.shape)
        record = {"stage": st.name, "layer": key[1], "shape": list(shape),
                  "layout": list(st.layout), "mask": st.mask,
                  "dtype_captured": str(tensor.dtype).replace("torch.", ""), "device_captured": str(tensor.device),
                  "provenance": "observed"}
        record.update(meta)
        blocks = row_blocks(shape) if part is None else None
        if blocks is None:
            self.put(("stage", key, *self._host(src, own), record, part))
        else:  # a large stage (lm_head [S, V]) goes in blocks of rows: none is ever copied whole
            rows = src.reshape(-1, shape[-1])
            for block in blocks:
                self.put(("stage", key, *self._host(rows[block.lo:block.hi]), record, block))
        if self.on_stage is not None and (part is None or part.index == part.count - 1):
            self.on_stage(st.name, key[1])

    def _host(self, tensor: Any, own: bool = False) -> tuple[np.ndarray, bool]:
        """A float32 host array of ``tensor`` and whether nobody else reads it: the tensor itself when the
        runner gives it (``own``), the runner's memory when it lends it (``borrow``: never modified after
        the tap), else a private copy."""
        import torch

        if own and tensor.device.type == "cpu" and tensor.dtype == torch.float32:
            return np.asarray(tensor.numpy()), True
        if self.borrow and tensor.device.type == "cpu" and tensor.dtype == torch.float32:
            return np.asarray(tensor.numpy()), False
        return np.asarray(tensor.to(device="cpu", dtype=torch.float32, copy=True).numpy()), True

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


def run_side(fn: Callable[[StreamTap], Any], tap: StreamTap) -> None:
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


def failed(label: str, exc: BaseException) -> BaseException:
    """A runner's exception as the comparison reports it: pv's own errors as they are, running out
    of memory (the host's or a GPU's) as one line naming the side."""
    if isinstance(exc, PvError):
        return exc
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        text = str(exc).splitlines()[0] if str(exc) else "no detail"
        return PvError(f"{label} ran out of memory ({type(exc).__name__}: {text[:200]}); try fewer tokens, "
                       "--positions/--heads, or a device with more memory")
    return exc


__all__ = ["Cancelled", "Key", "StreamTap", "failed", "run_side"]
