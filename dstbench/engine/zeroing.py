"""Zero off the mask: weights and every optimizer-state tensor shaped like a sparsified weight.

Handled by shape, not per optimizer, so SGD's momentum, Adam's moments and any optimizer a plugin
brings stay zero where the weight is pruned without the engine knowing their names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dstbench.core.context import MaskedLayer

__all__ = ["mask_gradients", "zero_off", "state_tensors"]


def state_tensors(
    optimizer: torch.optim.Optimizer, layers: Sequence[MaskedLayer], mask_of: Callable[[MaskedLayer], torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every optimizer-state tensor shaped like a sparsified weight, paired with its mask."""
    states: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for layer in layers:
        for value in optimizer.state.get(layer.weight, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                states.append(value)
                masks.append(mask_of(layer))
    return states, masks


@torch.no_grad()
def zero_off(
    layers: Sequence[MaskedLayer],
    mask_of: Callable[[MaskedLayer], torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """Multiply each layer's weight and its optimizer state by ``mask_of(layer)``."""
    if not layers:
        return
    torch._foreach_mul_([layer.weight for layer in layers], [mask_of(layer) for layer in layers])
    if optimizer is not None:
        states, masks = state_tensors(optimizer, layers, mask_of)
        if states:
            torch._foreach_mul_(states, masks)


def mask_gradients(layers: Sequence[MaskedLayer], mask_of: Callable[[MaskedLayer], torch.Tensor]) -> None:
    """Multiply each layer's gradient (where it has one) by ``mask_of(layer)``."""
    with_grad = [(layer, grad) for layer in layers if (grad := layer.weight.grad) is not None]
    if with_grad:
        torch._foreach_mul_([grad for _, grad in with_grad], [mask_of(layer) for layer, _ in with_grad])
