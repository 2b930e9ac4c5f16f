"""Topology records: what each mask update changed (grown, dropped, IoU per layer, wall time).

The run folder keeps one record per update in ``topology.jsonl`` and the masks themselves in
snapshots (:mod:`dstbench.runs.snapshots`), so the analysis code works from the folder alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "LayerChange",
    "TopologyRecord",
    "layer_change",
]


@dataclass(frozen=True)
class LayerChange:
    """How one layer's mask changed in one update."""

    active: int
    grown: int
    dropped: int
    intersection: int
    union: int

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def turnover(self) -> float:
        """Grown / active after the update: exploration, which pruning alone (grown = 0) never shows.

        IoU mixes the two: a mask that only shrinks by 20 % has IoU 0.8 and turnover 0."""
        return self.grown / self.active if self.active else 0.0


def layer_change(before: torch.Tensor, after: torch.Tensor) -> LayerChange:
    return LayerChange(
        active=int(after.sum()),
        grown=int((after & ~before).sum()),
        dropped=int((before & ~after).sum()),
        intersection=int((before & after).sum()),
        union=int((before | after).sum()),
    )


@dataclass
class TopologyRecord:
    """One topology update.

    ``step`` is the update's boundary: the training steps (batches) done before the new mask is first
    used, so 0 means "before training" and an update decided after step ``t`` has ``step = t + 1``.
    Under TF RigL's convention a mask step trains no weights, so it can exceed the optimizer steps.
    """

    step: int
    epoch: int
    seconds: float
    layers: dict[str, LayerChange] = field(default_factory=dict)

    @property
    def grown(self) -> int:
        return sum(c.grown for c in self.layers.values())

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.layers.values())

    @property
    def iou(self) -> float:
        """Global IoU: the masks concatenated, not a mean of per-layer values."""
        union = sum(c.union for c in self.layers.values())
        return 1.0 if union == 0 else sum(c.intersection for c in self.layers.values()) / union

    @property
    def active(self) -> int:
        return sum(c.active for c in self.layers.values())

    @property
    def turnover(self) -> float:
        """Global turnover: grown / active over all sparsified layers after the update."""
        return self.grown / self.active if self.active else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "seconds": self.seconds,
            "iou": self.iou,
            "turnover": self.turnover,
            "grown": self.grown,
            "dropped": self.dropped,
            "active": self.active,
            "layers": {
                name: {**asdict(change), "iou": change.iou, "turnover": change.turnover}
                for name, change in self.layers.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopologyRecord:
        layers = {
            name: LayerChange(**{k: int(v) for k, v in change.items() if k not in ("iou", "turnover")})
            for name, change in data.get("layers", {}).items()
        }
        return cls(step=int(data["step"]), epoch=int(data["epoch"]), seconds=float(data["seconds"]), layers=layers)
