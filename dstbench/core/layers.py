"""Which tensors can be sparse, and what the sparsity code needs to know about them.

Only the weights of ``Conv2d`` and ``Linear`` layers are prunable (as in RigL, SNIP and the other methods' code); biases and normalisation
parameters never are. Describing a layer by a small frozen record (name, shape, kind) lets the
distribution code run without a model, which is how its test vectors are checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["PrunableLayer", "find_prunable_layers", "describe_layers"]

LayerKind = Literal["conv", "linear"]


@dataclass(frozen=True)
class PrunableLayer:
    """A prunable weight: ``name`` is the module's qualified name in the model."""

    name: str
    shape: tuple[int, ...]
    kind: LayerKind

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def find_prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All Conv2d/Linear modules with a weight, in registration (forward-definition) order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and getattr(module, "weight", None) is not None
    ]


def describe_layers(model: nn.Module) -> list[PrunableLayer]:
    """The :class:`PrunableLayer` records of ``model``'s prunable weights."""
    layers = []
    for name, module in find_prunable_layers(model):
        assert isinstance(module, (nn.Conv2d, nn.Linear))
        kind: LayerKind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        layers.append(PrunableLayer(name, tuple(module.weight.shape), kind))
    return layers
