"""Weights a method asks to start from (LT's rewinding), loaded into the model by the engine."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dstbench.core.errors import ConfigError

__all__ = ["load_initial_weights"]

# Buffers the engine owns: never taken from a method's initial weights.
_ENGINE_BUFFERS = ("weight_mask", "weight_backward_mask", "weight_reserve")


def load_initial_weights(model: nn.Module, state: Mapping[str, torch.Tensor], owner: str) -> None:
    """Every parameter and buffer of ``model`` from ``state`` (the engine's mask buffers excepted), or
    one line saying why they do not fit."""
    kept = {key: value for key, value in state.items() if not key.endswith(_ENGINE_BUFFERS)}
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"{owner}: its initial weights do not fit this model: {str(exc).splitlines()[-1].strip()}") from None
    missing = [key for key in missing if not key.endswith(_ENGINE_BUFFERS)]
    if missing or unexpected:
        raise ConfigError(f"{owner}: its initial weights do not fit this model (e.g. {(missing or unexpected)[0]!r}); same --model?")
