"""A method's answer, checked and normalised before the engine installs it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dstbench.core.context import MaskedLayer, Masks, MaskUpdate, UpdateContext
from dstbench.core.errors import MaskInvariantError

__all__ = ["as_update", "check_masks", "apply_grown_values"]


def as_update(result: Masks | MaskUpdate, ctx: UpdateContext) -> MaskUpdate:
    """A method's answer as a :class:`MaskUpdate` (a plain dict is its masks; values a method put in
    ``ctx.grown_values``, the 0.2 way, count as grown values)."""
    if not isinstance(result, MaskUpdate):
        result = MaskUpdate(masks=result)
    if ctx.grown_values:
        result.grown = {**ctx.grown_values, **result.grown}
    return result


def check_masks(owner: str, layers: Sequence[MaskedLayer], new_masks: Masks, *, require_all: bool) -> None:
    """Masks only for sparsified layers, every one of them when ``require_all``, each a bool tensor
    shaped like its weight."""
    by_name = {layer.name: layer for layer in layers}
    unknown = set(new_masks) - set(by_name)
    if unknown:
        raise MaskInvariantError(f"{owner}: masks for non-sparsified layers {sorted(unknown)}")
    if require_all and set(new_masks) != set(by_name):
        missing = sorted(set(by_name) - set(new_masks))
        raise MaskInvariantError(f"{owner}: no initial mask for {missing}")
    for name, mask in new_masks.items():
        layer = by_name[name]
        if mask.shape != layer.weight.shape or mask.dtype != torch.bool:
            raise MaskInvariantError(
                f"{owner}: mask for {name} must be bool {tuple(layer.weight.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )


def apply_grown_values(
    owner: str,
    layers: Sequence[MaskedLayer],
    grown_values: Masks,
    backward_of: Callable[[MaskedLayer], torch.Tensor],
    before_backward: dict[str, torch.Tensor],
) -> None:
    """Entries that became active (or entered the backward set) with no value to keep start at the
    method's grown values."""
    by_name = {layer.name: layer for layer in layers}
    unknown = set(grown_values) - set(by_name)
    if unknown:
        raise MaskInvariantError(f"{owner}: grown values for unknown layers {sorted(unknown)}")
    for name, values in grown_values.items():
        layer = by_name[name]
        if values.shape != layer.weight.shape:
            raise MaskInvariantError(f"{owner}: grown values for {name} must be shaped {tuple(layer.weight.shape)}")
        grown = backward_of(layer) & ~before_backward[name]
        layer.weight.data[grown] = values.to(layer.weight.device, layer.weight.dtype)[grown]
