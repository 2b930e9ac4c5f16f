"""``channel_multiplier``: every registered CIFAR backbone (and ``tiny_cnn``) narrowed or widened by
one factor, timm's name for it (EfficientNet, MobileNet-v3). ``small-dense`` uses it to build a dense
network with as many weights as a sparse one keeps active.

Each conv width ``c`` becomes ``max(1, round(c * m))``, so the weight count grows monotonically in ``m``
(roughly as ``m**2``) and ``m = 1`` is the original network, bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["scale_width", "pop_multiplier"]


def scale_width(width: int, multiplier: float) -> int:
    """One layer's width under ``multiplier`` (at least one channel)."""
    return max(1, round(width * multiplier))


def pop_multiplier(variant: str, kwargs: dict[str, Any]) -> float:
    """Take ``channel_multiplier`` out of a factory's kwargs (1.0 when absent); it must be positive."""
    multiplier = float(kwargs.pop("channel_multiplier", 1.0))
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"{variant}: channel_multiplier must be a positive number, got {multiplier}")
    return multiplier
