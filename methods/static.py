"""Static sparse training: a uniformly random mask chosen once and never changed.

The "random" static baseline of the DST literature; SNIP/GraSP/LT differ only in how they pick the
initial mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from dstbench.core.registry import register_method
from dstbench.core.updater import MaskUpdater


@register_method("static")
@dataclass
class Static(MaskUpdater):
    """Random exact-count mask per layer (the base class's ``init_masks``), no topology updates."""

    paper = "random static sparse training"
