"""What to capture: stages and layers, checked against the stage table before anything runs.

A ``CapturePlan`` is frozen and parsed once (``pv trace --save-tensor``,
``--layers``); the disk tap asks it what is wanted, and ``expected`` lists every
(stage, layer) a run must produce, in computation order, so a stage that never
fired is an error rather than a silently missing file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pv import stages as stage_table
from pv.capture.partial import Slice


@dataclass(frozen=True)
class CapturePlan:
    """Stages (computation order) and layers (``None``: every layer) to capture; ``slice``: only
    these query rows and heads of the attention matrices (``pv.capture.partial``)."""

    stages: tuple[stage_table.Stage, ...]
    layers: tuple[int, ...] | None = None
    slice: Slice | None = None

    @classmethod
    def parse(cls, stages: str = "all", layers: str = "all", n_layers: int | None = None) -> CapturePlan:
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

    def expected(self, n_layers: int, features: dict[str, bool] | None = None) -> list[tuple[str, int | None]]:
        """Every (stage, layer) the plan asks of a model with ``n_layers`` layers, in order.

        With ``features`` (``ModelConfig.features``), stages the model does not have are left out.
        """
        layers = tuple(range(n_layers)) if self.layers is None else self.layers
        out: list[tuple[str, int | None]] = []
        for st in self.stages:
            if features is not None and not stage_table.applies(st, features):
                continue
            if st.name == "embedding":
                out.append((st.name, 0))
            elif st.whole_model:
                out.append((st.name, None))
            else:
                out.extend((st.name, layer) for layer in layers)
        out.sort(key=lambda key: stage_table.sort_key(*key))
        return out


def stage_keys(items: Iterable[tuple[str, int | None]]) -> list[str]:
    """Human-readable ``stage@layer`` names for error messages."""
    return [name if layer is None else f"{name}@{layer}" for name, layer in items]
