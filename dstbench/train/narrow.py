"""Narrowing a network to a weight budget: the model of ``small-dense`` (RigL's Small-Dense baseline).

A sparse network at sparsity ``s`` keeps some ``A`` weights active (the plan's count: its layers'
targets, dense-profile layers whole). Small-Dense trains a *dense* network of the same family with as
many weights, by narrowing every layer with the model's ``channel_multiplier`` (models/width.py).
Widths are whole channels, so the count moves in steps: the multiplier is searched on the grid
``j / W`` (``W`` the widest conv, so the widest layer moves one channel a step), where the count is
monotone in ``j``, and the closest count wins (the smaller on a tie). Candidates are built on the
``meta`` device: no memory, no time, and no draw from the run's random generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import timm
import torch

from dstbench.core.distributions import plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import PrunableLayer, describe_layers
from dstbench.engine.cost import count_forward_flops

__all__ = ["Narrowing", "narrowable_models", "check_narrowable", "narrow_for", "prunable_layers", "full_width_flops"]


def narrowable_models() -> tuple[str, ...]:
    """The models with a ``channel_multiplier``: the ones dstbench registers."""
    import dstbench.models

    return ("tiny_cnn", *dstbench.models.CIFAR_MODELS)


def check_narrowable(model: str, method: str) -> None:
    """One line naming the supported models when ``model`` cannot be narrowed."""
    if model not in narrowable_models():
        raise ConfigError(
            f"{method} needs a model with a channel_multiplier; {model!r} has none (supported: {', '.join(narrowable_models())})"
        )


@dataclass(frozen=True)
class Narrowing:
    """The chosen width and the counts it was chosen by (``summary.json``'s ``method_report``)."""

    channel_multiplier: float
    params: int
    """Prunable weights (conv and linear) of the narrowed dense network."""
    target: int
    """Active weights of the sparse network at the run's sparsity and distribution."""
    full_params: int
    """Prunable weights of the network at full width."""

    def record(self) -> dict[str, Any]:
        return asdict(self)


def prunable_layers(model: str, num_classes: int, multiplier: float = 1.0) -> list[PrunableLayer]:
    """The prunable layers of ``model`` at ``multiplier``, built on the meta device."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        kwargs: dict[str, Any] = {} if multiplier == 1.0 else {"channel_multiplier": multiplier}
        return describe_layers(timm.create_model(model, num_classes=num_classes, **kwargs))


def _count(model: str, num_classes: int, multiplier: float) -> int:
    return sum(layer.numel for layer in prunable_layers(model, num_classes, multiplier))


def narrow_for(
    model: str, num_classes: int, sparsity: float, distribution: str, dense_layers: str, min_active: int
) -> Narrowing:
    """The multiplier whose dense count is closest to the sparse network's active weights."""
    full = prunable_layers(model, num_classes)
    plan = plan_sparsity(full, sparsity, distribution, dense_layers, min_active=min_active)
    target = sum(t.active for t in plan.targets)
    grid = max(layer.shape[0] for layer in full if layer.kind == "conv")
    low, high = 1, grid  # bisect for the first j whose count reaches the target
    while low < high:
        mid = (low + high) // 2
        if _count(model, num_classes, mid / grid) >= target:
            high = mid
        else:
            low = mid + 1
    candidates = [(j, _count(model, num_classes, j / grid)) for j in {max(1, low - 1), low}]
    j, params = min(candidates, key=lambda c: (abs(c[1] - target), c[1]))
    return Narrowing(j / grid, params, target, sum(layer.numel for layer in full))


def full_width_flops(flops: Mapping[str, Any], model: str, num_classes: int, input_size: int) -> dict[str, Any]:
    """A narrowed run's FLOPs (``train_flops``: the narrowed network's, as trained) measured against
    the full-width ``model``: ``dense_train_flops`` is 3·f_D·N·E of the network every other method at
    this ``--model`` is compared with, so "× dense" reads alike in every row (small-dense at 90 %: about
    0.1, not 1). ``narrowed_dense_forward_flops`` keeps the narrowed network's f_D."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        full = count_forward_flops(timm.create_model(model, num_classes=num_classes), input_size)
    samples = flops["dense_train_flops"] / (3 * flops["dense_forward_flops"])
    dense_train = 3 * full.dense * samples
    return {
        **flops,
        "narrowed_dense_forward_flops": flops["dense_forward_flops"],
        "dense_forward_flops": full.dense,
        "dense_train_flops": dense_train,
        "train_flops_relative": flops["train_flops"] / dense_train,
    }
