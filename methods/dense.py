"""Dense training: the upper bound every sparse method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from dstbench.core.registry import register_method
from dstbench.core.updater import MaskUpdater, Needs


@register_method("dense")
@dataclass
class Dense(MaskUpdater):
    """No mask at all: the engine keeps every layer fully dense whatever sparsity is asked for."""

    paper = "dense baseline"

    @property
    def needs(self) -> Needs:
        return Needs(sparse=False)
