"""How a run's masks evolved, from its bit-packed snapshots alone: mask IoU (BiDST, Ji et al. 2024,
Figure 4) and the ITOP rate (Liu et al. 2021, "Do We Actually Need Dense Over-Parameterization?").

::

    IoU(M_a, M_b) = |A_a ∩ A_b| / |A_a ∪ A_b|                  A = {i : M_i = 1}
    global IoU    = Σ_l |A_a,l ∩ A_b,l| / Σ_l |A_a,l ∪ A_b,l|  (masks concatenated, not averaged)
    R_s (ITOP)    = Σ_l |∪_t A_t,l| / Σ_l n_l

all over the *sparsified* layers (dense-profile layers never change and would only pull IoU up).

Two IoU series:

* between consecutive topology updates: each update against the mask it replaced;
* at a fixed interval Δ: the mask in force at time t (steps done) is the latest snapshot at or before
  t, ``masks/init.npz`` being t = 0, and the series compares t = iΔ with t = (i+1)Δ. Sampling every
  method at the same Δ is what makes different cadences comparable: per update, RigL (every 100
  steps) changes little and its IoU would look artificially high next to BiDST's every few epochs.

Each point also carries the number of weights grown and dropped, since equal IoUs can hide different
mutation budgets (BiDST compares methods "within the same searching space").
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dstbench.core.errors import ConfigError, DstbenchError
from dstbench.engine.topology import LayerChange, TopologyRecord, layer_change
from dstbench.runs.snapshots import load_mask_snapshot

from dstbench.analysis.runs import Run

__all__ = [
    "Snapshot",
    "MaskChange",
    "snapshots",
    "compare_masks",
    "update_iou_series",
    "interval_steps",
    "interval_iou_series",
    "itop_rate",
]

Masks = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Snapshot:
    """The masks saved when ``step`` steps were done (the masks trained with from then on)."""

    step: int
    path: Path

    def masks(self, layers: Sequence[str]) -> dict[str, np.ndarray]:
        saved = load_mask_snapshot(self.path)
        return {name: saved[name] for name in layers}


@dataclass
class MaskChange(TopologyRecord):
    """How the masks at one time differ from those at an earlier time, per layer: the engine's
    :class:`~dstbench.engine.topology.TopologyRecord` (so the global IoU, grown and dropped are summed
    where training sums them), read back from snapshots and placed in training. ``step`` is the time of
    the later masks in steps done, ``epoch`` the epochs done by then; snapshots are not timed, so
    ``seconds`` is 0."""

    progress: float = 0.0
    """``step`` as a fraction of the run's steps."""

    @property
    def layer_iou(self) -> dict[str, float]:
        return {name: change.iou for name, change in self.layers.items()}

    @property
    def mean_layer_iou(self) -> float:
        """Diagnostic: per-layer IoUs averaged (small layers weigh as much as big ones)."""
        return float(np.mean(list(self.layer_iou.values())))

    @property
    def min_layer_iou(self) -> float:
        return min(self.layer_iou.values())


def _change(run: Run, step: int, before: Masks, after: Masks) -> MaskChange:
    layers = compare_masks(before, after)
    return MaskChange(step, step // run.steps_per_epoch, 0.0, layers, progress=step / run.total_steps)


def snapshots(run: Run) -> list[Snapshot]:
    """The initial masks (t = 0) and then every update's, in time order (as the run folder lists them)."""
    files = run.dir.snapshot_files()
    if not files or files[0].name != "init.npz":
        raise DstbenchError(f"{run.path} has no mask snapshots (no masks/init.npz)")
    return [Snapshot(0, files[0])] + [Snapshot(int(path.stem.removeprefix("step_")), path) for path in files[1:]]


def compare_masks(before: Masks, after: Masks) -> dict[str, LayerChange]:
    """Per-layer intersection, union, grown and dropped counts (the engine's own ``layer_change``)."""
    return {name: layer_change(torch.from_numpy(before[name]), torch.from_numpy(after[name])) for name in after}


def update_iou_series(run: Run) -> list[MaskChange]:
    """IoU of each topology update against the masks it replaced."""
    layers = run.sparsified_layers
    series = []
    history = snapshots(run)
    previous = history[0].masks(layers)
    for snapshot in history[1:]:
        current = snapshot.masks(layers)
        series.append(_change(run, snapshot.step, previous, current))
        previous = current
    return series


def interval_steps(run: Run, *, epochs: float | None = None, steps: int | None = None) -> int:
    """Δ in steps, from exactly one of ``epochs`` (may be fractional) or ``steps``."""
    if (epochs is None) == (steps is None):
        raise ConfigError("give the IoU interval in epochs or in steps, not both and not neither")
    value = steps if steps is not None else round(float(epochs or 0) * run.steps_per_epoch)
    if value < 1 or value > run.total_steps:
        raise ConfigError(f"IoU interval must be 1..{run.total_steps} steps for {run.path}, got {value} steps")
    return value


def interval_iou_series(run: Run, interval: int) -> list[MaskChange]:
    """IoU between the masks in force at t = iΔ and t = (i+1)Δ, for every (i+1)Δ <= the run's steps."""
    layers = run.sparsified_layers
    history = snapshots(run)
    times = [snapshot.step for snapshot in history]
    loaded: tuple[Path, dict[str, np.ndarray]] | None = None

    def masks_at(step: int) -> dict[str, np.ndarray]:
        nonlocal loaded
        snapshot = history[bisect.bisect_right(times, step) - 1]
        if loaded is None or loaded[0] != snapshot.path:  # time only moves forward: keep one in memory
            loaded = (snapshot.path, snapshot.masks(layers))
        return loaded[1]

    series = []
    previous = masks_at(0)
    for step in range(interval, run.total_steps + 1, interval):
        current = masks_at(step)
        series.append(_change(run, step, previous, current))
        previous = current
    return series


def itop_rate(run: Run) -> float:
    """R_s from the snapshots: the fraction of sparsified weights active in any of them.

    Equals the engine's ``itop_rate`` (``summary.json``) because every topology change is snapshotted.
    """
    layers = run.sparsified_layers
    fired: dict[str, np.ndarray] = {}
    for snapshot in snapshots(run):
        for name, mask in snapshot.masks(layers).items():
            fired[name] = fired[name] | mask if name in fired else mask
    total = sum(run.numel[name] for name in layers)
    return sum(int(mask.sum()) for mask in fired.values()) / total if total else 1.0
