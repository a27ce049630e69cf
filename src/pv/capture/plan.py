"""What to capture, and the tap that moves captured tensors from the forward to disk.

An engine calls ``tap.wants(stage, layer)`` at each capture point and, only when
that is true, ``tap(stage, layer, tensor)``. Without a tap the forward pays one
``is None`` check per point. The tap never changes the tensor it sees: it copies
it to float32 host memory and hands it to a ``CaptureWriter``, which writes it
at once, so memory stays bounded by about one stage.

On CUDA the copy is queued on a side stream into pinned host memory after an
event on the compute stream; the forward keeps running while the copy runs and
the file is written when the copy's event has completed. A small bound on the
bytes in flight keeps memory bounded even when the GPU outruns the disk.
Because that copy is asynchronous, an engine must not modify a tapped tensor
in place afterwards (the pv engine never does: every step makes a new tensor).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from pv import stages as stage_table
from pv.capture.aprt import CaptureWriter
from pv.errors import PvError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CapturePlan:
    """Stages (computation order) and layers (``None``: every layer) to capture."""

    stages: tuple[stage_table.Stage, ...]
    layers: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, stages: str = "all", layers: str = "all", n_layers: int | None = None) -> "CapturePlan":
        return cls(stage_table.parse_stages(stages), stage_table.parse_layers(layers, n_layers))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.stages)

    def wants(self, stage: str, layer: int | None) -> bool:
        if stage not in self.names:
            return False
        if layer is None or stage_table.BY_NAME[stage].whole_model or self.layers is None:
            return True
        return layer in self.layers

    def expected(self, n_layers: int) -> list[tuple[str, int | None]]:
        """Every (stage, layer) the plan asks of a model with ``n_layers`` layers, in order."""
        layers = tuple(range(n_layers)) if self.layers is None else self.layers
        out: list[tuple[str, int | None]] = []
        for st in self.stages:
            if st.name == "embedding":
                out.append((st.name, 0))
            elif st.whole_model:
                out.append((st.name, None))
            else:
                out.extend((st.name, layer) for layer in layers)
        out.sort(key=lambda key: stage_table.sort_key(*key))
        return out


class Tap:
    """Copies requested stages to the host and streams them to a ``CaptureWriter``.

    Each file records ``dtype_captured``, the dtype of the tensor the engine
    handed over (or the fixed ``dtype_captured`` given here): the values on disk
    are always float32, widened exactly from that dtype.
    """

    #: Bytes of pinned host memory that may be in flight on CUDA before the
    #: tap waits for the oldest copy (about one large stage).
    MAX_IN_FLIGHT = 256 << 20

    def __init__(
        self,
        plan: CapturePlan,
        writer: CaptureWriter,
        *,
        dtype_captured: str | None = None,
        on_write: Callable[[str, int | None], None] | None = None,
    ):
        self.plan = plan
        self.writer = writer
        self.dtype_captured = dtype_captured
        self.on_write = on_write
        self._names = plan.names
        self._layers = None if plan.layers is None else frozenset(plan.layers)
        self.fired: set[tuple[str, int | None]] = set()
        self.skipped: dict[str, str] = {}
        self._pending: deque[tuple[Any, Any, str, int | None, dict[str, Any]]] = deque()
        self._pending_bytes = 0
        self._stream: Any = None

    def wants(self, stage: str, layer: int | None) -> bool:
        if stage not in self._names:
            return False
        if self._layers is None or layer is None or stage_table.BY_NAME[stage].whole_model:
            return True
        return layer in self._layers

    def __call__(self, stage: str, layer: int | None, tensor: "torch.Tensor", **meta: Any) -> None:
        if not self.wants(stage, layer):
            return
        key = (stage, 0 if stage == "embedding" else layer)
        if key in self.fired:
            raise PvError(f"stage {stage} layer {layer} was captured twice in one forward")
        self.fired.add(key)
        meta.setdefault("dtype_captured", self.dtype_captured or str(tensor.dtype).replace("torch.", ""))
        meta.setdefault("provenance", "observed")
        if tensor.device.type == "cuda":
            self._queue_cuda(stage, key[1], tensor, meta)
            self._drain(block=False)
        else:
            host = tensor.detach().to(dtype=_float32(), copy=True).numpy()
            self._write(stage, key[1], host, meta)

    def not_applicable(self, stage: str, reason: str) -> None:
        name = stage_table.get(stage).name
        if name in self._names:
            self.skipped[name] = reason
            self.writer.mark_not_applicable(name, reason)

    def finish(self) -> None:
        """Wait for every queued copy and write it (call once after the forward)."""
        self._drain(block=True)

    def missing(self, n_layers: int) -> list[tuple[str, int | None]]:
        """Requested (stage, layer) pairs that neither fired nor were declared not applicable."""
        return [k for k in self.plan.expected(n_layers) if k not in self.fired and k[0] not in self.skipped]

    # ------------------------------------------------------------------ internals

    def _write(self, stage: str, layer: int | None, host: np.ndarray, meta: dict[str, Any]) -> None:
        self.writer.write(stage, layer, host, **meta)
        if self.on_write is not None:
            self.on_write(stage, layer)

    def _queue_cuda(self, stage: str, layer: int | None, tensor: "torch.Tensor", meta: dict[str, Any]) -> None:
        import torch

        if self._stream is None:
            self._stream = torch.cuda.Stream(device=tensor.device)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(tensor.device))
        host = torch.empty(tuple(tensor.shape), dtype=torch.float32, pin_memory=True)
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            src = tensor.detach()
            if src.dtype != torch.float32:
                src = src.to(torch.float32)  # exact widening, on the side stream
            host.copy_(src, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        # The compute stream may free and reuse ``tensor`` once the forward moves
        # on; tell the caching allocator that the side stream still reads it.
        tensor.record_stream(self._stream)
        self._pending.append((done, host, stage, layer, meta))
        self._pending_bytes += host.numel() * 4
        while self._pending_bytes > self.MAX_IN_FLIGHT and len(self._pending) > 1:
            self._pop(block=True)

    def _pop(self, block: bool) -> bool:
        done, host, stage, layer, meta = self._pending[0]
        if not block and not done.query():
            return False
        done.synchronize()
        self._pending.popleft()
        self._pending_bytes -= host.numel() * 4
        self._write(stage, layer, host.numpy(), meta)
        return True

    def _drain(self, block: bool) -> None:
        while self._pending and self._pop(block):
            pass


def _float32() -> Any:
    import torch

    return torch.float32


def stage_keys(items: Iterable[tuple[str, int | None]]) -> list[str]:
    """Human-readable ``stage@layer`` names for error messages."""
    return [name if layer is None else f"{name}@{layer}" for name, layer in items]
