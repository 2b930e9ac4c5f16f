"""The invariants a method's masks must keep: counts by its declared density policy, zeros off the mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dstbench.core.context import MaskedLayer
from dstbench.core.errors import MaskInvariantError
from dstbench.core.steps import StepInfo
from dstbench.core.structures import UNSTRUCTURED, Structure
from dstbench.core.updater import MaskUpdater

__all__ = ["count_targets", "count_problems", "zero_problems"]


def count_targets(
    updater: MaskUpdater, layers: Sequence[MaskedLayer], info: StepInfo | None
) -> tuple[dict[str, int], int | None]:
    """The count each layer must hold and the total (None: no rule on the total) after an update
    decided at ``info.step``, by the declared density policy; ``None``: the end of training."""
    policy = updater.needs.density_policy
    plan = {layer.name: layer.k for layer in layers}
    if info is not None and policy in ("scheduled", "scheduled_global"):
        targets = updater.targets(info, list(layers))
        if policy == "scheduled":
            if targets is None or targets.layers is None:
                raise MaskInvariantError(f"{updater.name}: density_policy='scheduled' needs targets() with per-layer counts")
            return {**plan, **targets.layers}, None
        if targets is None or targets.total is None:
            raise MaskInvariantError(f"{updater.name}: density_policy='scheduled_global' needs targets() with a total")
        return plan, targets.total
    return plan, sum(plan.values()) if policy in ("global", "scheduled_global") else None


def count_problems(
    updater: MaskUpdater,
    layers: Sequence[MaskedLayer],
    counts: dict[str, int],
    info: StepInfo | None,
    structure: Structure = UNSTRUCTURED,
) -> list[str]:
    """Counts against the declared policy at ``info`` (``None``: the end of training, the plan).

    Under a structure every per-layer target is the structure's count for it (:meth:`Structure.count`),
    and a global policy's total is not checked: each layer's count is rounded to whole units on its
    own, so the total moves by less than half a unit per layer (N:M: fixed per layer)."""
    policy = updater.needs.density_policy
    targets, total = count_targets(updater, layers, info)
    if not structure.unstructured:
        shapes = {layer.name: tuple(layer.weight.shape) for layer in layers}
        targets = {name: structure.count(shapes[name], target) if name in shapes else target for name, target in targets.items()}
        total = None
    problems = []
    if total is not None and sum(counts.values()) != total:
        problems.append(f"{sum(counts.values())} active weights in all, target {total} ({policy})")
    for name, count in counts.items():
        target = targets[name]
        if (
            (policy in ("exact", "scheduled") and count != target)
            or (policy == "at_least" and count < target)
            or (policy == "at_most" and count > target)
        ):
            problems.append(f"layer {name} has {count} active weights, target {target} ({policy})")
    return problems


def zero_problems(layer: MaskedLayer, backward: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> list[str]:
    """Pruned weights that are not exactly zero, and optimizer state (when masked) off the backward set."""
    problems = []
    pruned = layer.weight.detach()[~layer.mask]
    if pruned.numel() and float(pruned.abs().max()) != 0.0:
        problems.append(f"{layer.name}: pruned weights are non-zero")
    for key, value in (optimizer.state.get(layer.weight, {}) if optimizer is not None else {}).items():
        if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape and bool((value[~backward] != 0).any()):
            problems.append(f"{layer.name}: optimizer state {key!r} non-zero off the mask")
    return problems
