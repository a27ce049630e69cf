"""The disk tap: moves a runner's stages from its forward to a capture directory.

A runner hands each stage to its tap (``pv.capture.tap``); this one keeps
the stages its ``CapturePlan`` asks for. It never changes the tensor it sees: it copies
it to float32 host memory and hands it, in batches of a few stages, to writer
threads, which write it through a ``CaptureWriter`` (hashing and file I/O
release the GIL, so they overlap with the forward). One writer thread per core the forward leaves idle
(at least one, at most ``MAX_WRITERS``) write different stages at once; the
manifest still lists them in the order they were tapped. A bound on the bytes
waiting to be written keeps memory near one stage: the forward waits when the
disk falls behind.

On CUDA the copy is queued on a side stream into pinned host memory after an
event on the compute stream; the forward keeps running while the copy runs,
and the writer thread waits for the copy's event before writing the file.
Because that copy is asynchronous, an engine must not modify a tapped tensor
in place afterwards (the pv engine never does: every step makes a new tensor).
An engine that makes that promise on the CPU too sets ``tap.borrow``: its
tensors then go to the writer threads as they are, widened to float32 and made
contiguous there, so the forward's thread copies nothing (the pv engine does;
the transformers oracle, whose modules are not ours, does not).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pv import stages as stage_table
from pv.capture import partial
from pv.capture.plan import CapturePlan
from pv.capture.store.writer import CaptureWriter
from pv.capture.tap import Parts
from pv.errors import PvError

if TYPE_CHECKING:
    import torch


class DiskTap:
    """Copies requested stages to the host and streams them to a ``CaptureWriter``.

    Each file records ``dtype_captured``, the dtype of the tensor the engine
    handed over (or the fixed ``dtype_captured`` given here): the values on disk
    are always float32, widened exactly from that dtype.

    Call ``finish()`` after the forward (before ``writer.close()``) so that every
    stage is on disk, or ``abort()`` when the forward failed.
    """

    #: Bytes of captured data that may wait for the writer threads before the
    #: forward waits for the oldest write; with one stage on its way this bounds
    #: the capture's extra memory, whatever the model size or number of stages.
    MAX_IN_FLIGHT = 64 << 20
    #: CPU stages smaller than this are written on the forward's thread when
    #: no write is pending (thread hand-off costs more than the write).
    INLINE_BELOW = 256 << 10
    #: More writer threads than this gain nothing measurable: the page cache
    #: and memory bandwidth saturate first.
    MAX_WRITERS = 4
    #: Stages go to a writer thread in batches of this many (or of this many
    #: bytes, whichever comes first): waking a thread and a future per stage
    #: cost the forward about 10% of its time on SmolLM2 (483 stages), a batch
    #: of 8 an eighth of that. ``finish()`` sends the last, partial batch.
    BATCH_STAGES = 8
    BATCH_BYTES = 4 << 20

    def __init__(
        self,
        plan: CapturePlan,
        writer: CaptureWriter,
        *,
        dtype_captured: str | None = None,
        on_write: Callable[[str, int | None], None] | None = None,
        copier: Any = None,
        writers: int | None = None,
    ):
        self.plan = plan
        self.writer = writer
        self.dtype_captured = dtype_captured
        self.on_write = on_write
        self._names = plan.names
        self._layers = None if plan.layers is None else frozenset(plan.layers)
        self.fired: set[tuple[str, int | None]] = set()
        self.skipped: dict[str, str] = {}
        #: Writer threads; None: one per core the forward leaves idle (``default_writers``).
        self.writers = writers
        #: Batches at the writer threads, in tap order: (future of their manifest
        #: records, bytes, their (stage, layer) keys).
        self._inflight: deque[tuple[Future[list[dict[str, Any] | None]], int, list[tuple[str, int | None]]]] = deque()
        self._inflight_bytes = 0
        #: Stages tapped but not yet sent: (stage, layer, host tensor, copy event, meta).
        self._batch: list[tuple[str, int | None, Any, Any, dict[str, Any]]] = []
        self._batch_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._failed = threading.Event()
        self._stream: Any = None
        #: How device tensors reach the host: ``CudaCopier`` (side stream, pinned
        #: buffers) for CUDA tensors; a test may pass a stand-in that routes CPU
        #: tensors through the same asynchronous path.
        self._copier = copier
        #: Set by an engine whose tapped tensors are never modified in place after
        #: the tap (the pv engine): float32 CPU tensors are then written without a copy.
        self.borrow = False
        self._parts = Parts()
        self._cutter = None if plan.slice is None else partial.Cutter(plan.slice)

    def wants(self, stage: str, layer: int | None) -> bool:
        if stage not in self._names:
            return False
        if self._layers is None or layer is None or stage_table.BY_NAME[stage].whole_model:
            return True
        return layer in self._layers

    def __call__(self, stage: str, layer: int | None, tensor: torch.Tensor, **meta: Any) -> None:
        if not self.wants(stage, layer):
            return
        part = meta.pop("part", None)
        own = meta.pop("own", False)
        cutter = self._cutter if stage in partial.SLICED else None
        if part is not None:  # a block of a large stage: the file is written once the stage is whole
            held = tensor.detach() if self.borrow or own else tensor.detach().clone()  # kept past this call
            whole = (self._parts.add(stage, layer, held, part) if cutter is None else
                     cutter.part(stage, layer, held, part))
            if whole is None:
                return
            tensor = whole
        elif cutter is not None:
            tensor = cutter.whole(tensor)
        if cutter is not None:
            meta["slice"] = cutter.slice.to_json()
        key = (stage, 0 if stage == "embedding" else layer)
        if key in self.fired:
            raise PvError(f"stage {stage} layer {layer} was captured twice in one forward")
        self.fired.add(key)
        meta.setdefault("dtype_captured", self.dtype_captured or str(tensor.dtype).replace("torch.", ""))
        meta.setdefault("device_captured", str(tensor.device))
        meta.setdefault("provenance", "observed")
        if tensor.device.type == "cuda" or self._copier is not None:
            host, done = self._copy_async(tensor)
        else:
            # A private float32 copy: a writer thread may still be reading it
            # when the forward has moved on. An engine that promises never to
            # modify a tapped tensor afterwards (``borrow``) lends float32 ones.
            src = tensor.detach()
            if self.borrow:  # widened and made contiguous on a writer thread, off the forward
                host, done = src, None
            else:
                host, done = src.to(dtype=_float32(), copy=True), None
        self._submit(stage, key[1], host, done, meta)

    def not_applicable(self, stage: str, reason: str) -> None:
        name = stage_table.get(stage).name
        if name in self._names:
            self.skipped[name] = reason
            self.writer.mark_not_applicable(name, reason)

    def finish(self) -> None:
        """Wait until every captured stage is on disk; re-raise the first write error."""
        try:
            self._send()
            while self._inflight:
                self._wait_oldest()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """After a failed forward: stop writing, wait for the writer threads, swallow their errors."""
        self._failed.set()
        self._batch, self._batch_bytes = [], 0  # never sent: nothing of it is on disk
        while self._inflight:
            fut = self._inflight.popleft()[0]
            fut.cancel()
            try:
                records = fut.result()
            except _BatchFailed as failed:
                records = failed.done
            except BaseException:  # noqa: BLE001, S112 - the forward's own error is the one to report
                continue
            for record in records:
                if record is not None:  # on disk: listed, so that the caller's clean-up finds it
                    self.writer.add(record)
        self._inflight_bytes = 0
        self._shutdown()

    def missing(self, n_layers: int) -> list[tuple[str, int | None]]:
        """Requested (stage, layer) pairs that neither fired nor were declared not applicable."""
        return [k for k in self.plan.expected(n_layers) if k not in self.fired and k[0] not in self.skipped]

    # ------------------------------------------------------------------ internals

    def _submit(self, stage: str, layer: int | None, host: torch.Tensor, done: Any,
                meta: dict[str, Any]) -> None:
        self._reap()
        nbytes = host.numel() * 4
        if done is None and nbytes < self.INLINE_BELOW and not self._inflight and not self._batch:
            # Handing a small stage to a thread costs more than writing it;
            # with nothing pending, writing it here keeps the tap order too.
            record = self._store(stage, layer, host, None, meta)
            if record is not None:
                self._commit(record, stage, layer)
            return
        self._batch.append((stage, layer, host, done, meta))
        self._batch_bytes += nbytes
        if len(self._batch) >= self.BATCH_STAGES or self._batch_bytes >= min(self.BATCH_BYTES, self.MAX_IN_FLIGHT):
            self._send()

    def _send(self) -> None:
        """Hand the stages tapped since the last batch to a writer thread."""
        if not self._batch:
            return
        batch, nbytes = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        while self._inflight and self._inflight_bytes + nbytes > self.MAX_IN_FLIGHT:
            self._wait_oldest()
        if self._pool is None:
            n = self.writers or default_writers(cuda=batch[0][3] is not None)
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pv-capture-writer")
        fut = self._pool.submit(self._store_batch, batch)
        self._inflight.append((fut, nbytes, [(item[0], item[1]) for item in batch]))
        self._inflight_bytes += nbytes

    def _store_batch(self, batch: list[tuple[str, int | None, Any, Any, dict[str, Any]]]
                     ) -> list[dict[str, Any] | None]:
        """Runs on a writer thread: one batch's files, in order; a failure carries the records already made."""
        done: list[dict[str, Any] | None] = []
        for item in batch:
            try:
                done.append(self._store(*item))
            except BaseException as exc:
                raise _BatchFailed(done, exc) from exc
        return done

    def _store(self, stage: str, layer: int | None, host: torch.Tensor, done: Any,
               meta: dict[str, Any]) -> dict[str, Any] | None:
        """Runs on a writer thread: one stage's file; its record is listed later, in tap order."""
        if self._failed.is_set():
            return None
        try:
            if done is not None:
                done.synchronize()
            if host.dtype != _float32():  # a borrowed half-precision tensor: exact widening here
                host = host.to(_float32())
            return self.writer.store(stage, layer, host.numpy(), **meta)
        except BaseException:
            self._failed.set()
            raise

    def _commit(self, record: dict[str, Any], stage: str, layer: int | None) -> None:
        self.writer.add(record)
        if self.on_write is not None:
            self.on_write(stage, layer)

    def _reap(self) -> None:
        """List finished writes in tap order: frees their budget and surfaces a write error early."""
        while self._inflight and self._inflight[0][0].done():
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        fut, nbytes, keys = self._inflight.popleft()
        self._inflight_bytes -= nbytes
        try:
            records = fut.result()
        except _BatchFailed as failed:
            for record in failed.done:  # on disk: listed, so that the caller's clean-up finds them
                if record is not None:
                    self.writer.add(record)
            raise failed.cause from None
        for record, (stage, layer) in zip(records, keys):
            if record is not None:
                self._commit(record, stage, layer)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _copy_async(self, tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Queue a device-to-host copy on a side stream; returns the host buffer and its event."""
        import torch

        ops = self._copier
        if ops is None:
            ops = self._copier = CudaCopier()
        if self._stream is None:
            self._stream = ops.stream(tensor.device)
        ready = ops.event()
        ready.record(ops.current_stream(tensor.device))
        host = ops.host_buffer(tuple(tensor.shape))
        with ops.use(self._stream):
            self._stream.wait_event(ready)
            src = tensor.detach()
            if src.dtype != torch.float32:
                src = src.to(torch.float32)  # exact widening, on the side stream
            host.copy_(src, non_blocking=True)
            done = ops.event()
            done.record(self._stream)
        # The compute stream may free and reuse ``tensor`` once the forward moves
        # on; tell the caching allocator that the side stream still reads it.
        ops.keep_alive(tensor, self._stream)
        return host, done


class _BatchFailed(Exception):
    """A batch's write failed part way: the records of the files it did write, and why it stopped."""

    def __init__(self, done: list[dict[str, Any] | None], cause: BaseException):
        super().__init__(str(cause))
        self.done = done
        self.cause = cause


class CudaCopier:
    """The CUDA side of ``DiskTap``: a side stream, events, pinned host buffers."""

    def stream(self, device: Any) -> Any:
        import torch

        return torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]

    def current_stream(self, device: Any) -> Any:
        import torch

        return torch.cuda.current_stream(device)

    def event(self) -> Any:
        import torch

        return torch.cuda.Event()  # type: ignore[no-untyped-call]

    def use(self, stream: Any) -> Any:
        import torch

        return torch.cuda.stream(stream)

    def host_buffer(self, shape: tuple[int, ...]) -> Any:
        import torch

        return torch.empty(shape, dtype=torch.float32, pin_memory=True)

    def keep_alive(self, tensor: Any, stream: Any) -> None:
        tensor.record_stream(stream)


def default_writers(*, cuda: bool) -> int:
    """Writer threads for a capture: the cores the forward leaves idle, 1 to ``DiskTap.MAX_WRITERS``.

    A CPU forward keeps ``torch.get_num_threads()`` cores busy; a CUDA forward
    keeps one (the thread that launches kernels). On a 2-core machine running
    torch on both, that is one writer, which then shares the cores.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    busy = 1 if cuda else torch.get_num_threads()
    return max(1, min(DiskTap.MAX_WRITERS, cores - busy))


def _float32() -> Any:
    import torch

    return torch.float32
