"""The backward set as a strategy the engine calls at fixed points.

Most methods train exactly what the forward pass uses: their backward set ``B`` is the mask ``M``
(:class:`ForwardMask`, where every call is trivial). Top-KAST (Jayakumar et al., NeurIPS 2020) keeps a
larger ``B ⊇ M`` (:class:`ReservedBackwardSet`): between steps the weights hold ``M * theta`` and the
values on ``B - M`` wait in the persistent buffer ``weight_reserve``; they are put back (:meth:`restore`)
before anything reads or trains them and set aside again (:meth:`set_aside`) after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dstbench.core.context import MaskedLayer
from dstbench.core.errors import MaskInvariantError

__all__ = ["BackwardSet", "ForwardMask", "ReservedBackwardSet", "backward_set_for"]


class ForwardMask:
    """No backward set of its own: ``B = M``."""

    def mask(self, layer: MaskedLayer) -> torch.Tensor:
        return layer.mask

    def masks(self) -> dict[str, torch.Tensor]:
        """The backward sets for a method's context (empty: every ``B`` is its mask)."""
        return {}

    def restore(self) -> None:
        """Nothing is set aside."""

    def set_aside(self) -> None:
        """Nothing to set aside."""

    def install(self, masks: Mapping[str, torch.Tensor], *, require_all: bool, owner: str) -> None:
        """A method without a backward set has none to install."""

    def densities(self) -> dict[str, float] | None:
        return None

    def problems(self, layer: MaskedLayer) -> list[str]:
        return []


class ReservedBackwardSet(ForwardMask):
    """``B ⊇ M`` in the buffer ``weight_backward_mask``, the values on ``B - M`` in ``weight_reserve``."""

    def __init__(self, layers: Sequence[MaskedLayer]) -> None:
        self.layers = list(layers)
        for layer in self.layers:
            if "weight_backward_mask" not in dict(layer.module.named_buffers(recurse=False)):
                layer.module.register_buffer("weight_backward_mask", torch.ones_like(layer.weight, dtype=torch.bool))
                layer.module.register_buffer("weight_reserve", torch.zeros_like(layer.weight.detach()))

    def mask(self, layer: MaskedLayer) -> torch.Tensor:
        return _buffer(layer, "weight_backward_mask")

    def masks(self) -> dict[str, torch.Tensor]:
        return {layer.name: self.mask(layer) for layer in self.layers}

    def set_aside(self) -> None:
        """The values on ``B - M`` go to ``weight_reserve``, the weight keeps ``M``."""
        with torch.no_grad():
            for layer in self.layers:
                reserve = _buffer(layer, "weight_reserve")
                outside = self.mask(layer) & ~layer.mask
                reserve.copy_(layer.weight.detach() * outside)
                layer.weight.mul_(layer.mask)

    def restore(self) -> None:
        """Put the ``B - M`` values back before anything reads or trains them."""
        with torch.no_grad():
            for layer in self.layers:
                reserve = _buffer(layer, "weight_reserve")
                layer.weight.add_(reserve.to(layer.weight.dtype))
                reserve.zero_()

    def install(self, masks: Mapping[str, torch.Tensor], *, require_all: bool, owner: str) -> None:
        """Validate and store a method's backward sets (each must contain its layer's mask)."""
        by_name = {layer.name: layer for layer in self.layers}
        if require_all and set(masks) != set(by_name):
            raise MaskInvariantError(f"{owner}: no backward set for {sorted(set(by_name) - set(masks))}")
        for name, mask in masks.items():
            layer = by_name.get(name)
            if layer is None or mask.shape != layer.weight.shape or mask.dtype != torch.bool:
                raise MaskInvariantError(f"{owner}: backward set for {name} must be a bool mask of its weight")
            mask = mask.to(layer.mask.device)
            if bool((layer.mask & ~mask).any()):
                raise MaskInvariantError(f"{owner}: backward set of {name} does not contain its mask")
            self.mask(layer).copy_(mask)

    def densities(self) -> dict[str, float]:
        """Per-layer density of the backward sets: what the weight-gradient costs."""
        return {layer.name: int(self.mask(layer).sum()) / layer.numel for layer in self.layers}

    def problems(self, layer: MaskedLayer) -> list[str]:
        backward = self.mask(layer)
        problems = []
        if bool((layer.mask & ~backward).any()):
            problems.append(f"{layer.name}: backward set does not contain the mask")
        if bool((_buffer(layer, "weight_reserve")[~(backward & ~layer.mask)] != 0).any()):
            problems.append(f"{layer.name}: reserved values outside the backward set")
        return problems


BackwardSet = ForwardMask
"""The interface the engine calls (both strategies share it)."""


def backward_set_for(wanted: bool, layers: Sequence[MaskedLayer]) -> ForwardMask:
    return ReservedBackwardSet(layers) if wanted else ForwardMask()


def _buffer(layer: MaskedLayer, name: str) -> torch.Tensor:
    buffer = getattr(layer.module, name)
    assert isinstance(buffer, torch.Tensor)
    return buffer
