"""The runners pv captures: one protocol, one registry.

A runner loads a model and computes with it, handing each stage to a tap
(``pv.capture.tap``) as it produces it, in computation order: a forward over a
sequence, or a decode step on top of its own KV cache. pv's engine, the
transformers oracle and llama.cpp are the rows of ``RUNNERS``; each row names
its factory by module and attribute, imported on first use, so listing the
runners (``pv trace --help``) loads none of them. What the commands ask of an
engine (does it take ``--inject-fault``, can it rerun one layer for ``pv
bisect --isolate``, does it take a device map, what must hold before it loads)
is a field of its row, never a test of its name.

A new engine is a class that satisfies ``Runner``, a ``load`` function, and one
row: here, or ``register(RunnerKind(...))`` from outside.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pv import stages as stage_table
from pv.capture.faults import FaultSpec, check_fault, parse_fault
from pv.capture.tap import NULL_TAP, Tap
from pv.errors import PvError

if TYPE_CHECKING:
    import numpy as np

    from pv.capture.model.loaded import LoadedModel


@dataclass(frozen=True)
class Exposure:
    """The stages a runner hands to its tap on its model, and why it hands none of the others.

    Every runner converts what it computes into the stage table's canonical
    layout (``layout``), so two runners' stages compare without knowing which
    runner made them.
    """

    #: Stage name -> why not, in the order the runner reports them to its tap.
    missing: Mapping[str, str]

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages handed over, in computation order."""
        return tuple(s.name for s in stage_table.STAGES if s.name not in self.missing)

    @staticmethod
    def layout(stage: str) -> tuple[str, ...]:
        return stage_table.get(stage).layout

    def tell(self, tap: Tap) -> None:
        """Tell ``tap`` which stages it will not get, and why."""
        for stage, reason in self.missing.items():
            tap.not_applicable(stage, reason)


class Runner(Protocol):
    """An engine pv captures. Logits are float32 torch tensors ``[S, V]`` for the tokens given, or
    ``[1, V]`` (the last position's) when ``last``: a runner then need not hold [S, V] at once."""

    def forward(self, token_ids: Sequence[int], tap: Tap = NULL_TAP, *, last: bool = False) -> Any:
        """One sequence from position 0, no cache."""
        ...

    def start(self) -> Any:
        """A fresh decode state (an empty KV cache) for ``decode``."""
        ...

    def decode(self, token_ids: Sequence[int], state: Any, tap: Tap = NULL_TAP, *, last: bool = False) -> Any:
        """New tokens on top of ``state``: the first call is the prefill, each later one a decode step."""
        ...

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation."""
        ...

    def stages(self) -> Exposure: ...

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of how this runner computes (kernels, mask policy, quantization)."""
        ...

    def close(self) -> None:
        """Free what the runner holds outside Python (a no-op for most)."""
        ...


class Isolating(Runner, Protocol):
    """A runner that reruns one decoder layer from a given input (``pv bisect --isolate``)."""

    def run_layer(self, layer: int, hidden: np.ndarray, tap: Tap = NULL_TAP) -> np.ndarray: ...


@dataclass(frozen=True)
class Settings:
    """How a runner is asked to run: already checked by the plan (``pv.capture.trace.make_plan``)."""

    device: str = "cpu"
    dtype: str = "float32"
    fault: FaultSpec | None = None
    #: transformers/accelerate device map ("auto" or {module: device}) for runners that take one.
    device_map: Any = None
    offload_dir: str | None = None


@dataclass(frozen=True)
class RunnerKind:
    """A row of the registry: one engine and what the commands may ask of it."""

    name: str
    #: ``module:attribute`` of ``load(model: LoadedModel, settings: Settings) -> Runner``.
    factory: str
    description: str
    #: Takes ``--inject-fault``: plants the catalogue's faults whose ``runner`` is this name.
    faults: bool = False
    #: Satisfies ``Isolating`` (``pv bisect --isolate`` reruns it layer by layer).
    isolates: bool = False
    #: Takes a device map (``--device-map``, ``--offload-dir``).
    device_map: bool = False
    #: Packages whose versions its manifests record besides numpy and torch.
    packages: tuple[str, ...] = ()
    #: ``module:attribute`` of ``check(model: str, device: str, dtype: str)``, run before anything
    #: loads: what this runner refuses to run (a model kind, a device, a dtype, a missing library).
    check: str | None = None

    def load(self, model: LoadedModel, settings: Settings) -> Runner:
        factory: Callable[[LoadedModel, Settings], Runner] = self._attribute(self.factory)
        return factory(model, settings)

    def fault(self, fault: str | FaultSpec | None, n_layers: int, features: dict[str, bool]) -> FaultSpec | None:
        """``--inject-fault`` for this runner: a fault of the catalogue planted in it, fit for the model."""
        if fault is None:
            return None
        if not self.faults:
            raise PvError(f"--inject-fault works with --engine {' or '.join(with_faults())} only "
                          "(the reference stays clean)")
        spec = parse_fault(fault, self.name) if isinstance(fault, str) else fault
        if spec.fault.runner != self.name:
            raise PvError(f"fault {spec} is planted in {spec.fault.runner}, not in --engine {self.name}")
        check_fault(spec, n_layers, features)
        return spec

    def check_plan(self, model: str, device: str, dtype: str) -> None:
        if self.check is not None:
            self._attribute(self.check)(model, device, dtype)

    def _attribute(self, target: str) -> Any:
        module, _, name = target.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise PvError(f"--engine {self.name}: {self.description} is not available ({exc})") from None


RUNNERS: dict[str, RunnerKind] = {kind.name: kind for kind in (
    RunnerKind("pv", "pv.capture.engine.runner:load", "this project's engine", faults=True, isolates=True),
    RunnerKind("hf", "pv.capture.oracle.runner:load", "the transformers oracle", device_map=True,
               packages=("transformers",)),
    RunnerKind("llama.cpp", "pv.capture.llamacpp.runner:load", "llama.cpp running a GGUF file", faults=True,
               packages=("llama-cpp-python",), check="pv.capture.llamacpp.runner:check"),
)}


def register(kind: RunnerKind) -> None:
    """Add a runner (an engine pv does not ship); a name already taken is refused."""
    key = kind.name.strip().lower()
    if key in RUNNERS:
        raise PvError(f"a runner named '{key}' is already registered")
    RUNNERS[key] = kind


def names() -> tuple[str, ...]:
    return tuple(RUNNERS)


def get(name: str) -> RunnerKind:
    """The row named ``name`` (trimmed, any case); an unknown name lists the valid ones."""
    kind = RUNNERS.get(name.strip().lower())
    if kind is None:
        raise PvError(f"unknown engine '{name}'; choose one of {', '.join(RUNNERS)}")
    return kind


def with_faults() -> list[str]:
    """The runners that take ``--inject-fault``."""
    return [k.name for k in RUNNERS.values() if k.faults]
