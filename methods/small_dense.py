"""Small-Dense: RigL's parameter-matched dense baseline (Evci et al., ICML 2020, Section 4.1).

A dense network of the same family, narrowed until its weight count matches the sparse network's
active weights at the run's ``--sparsity`` and ``--distribution``: what a sparse method must beat to
show that sparsity, not just fewer weights, is what it buys. Training is plain dense training of the
narrowed network; its FLOPs are the narrowed network's. The width is searched when the run is built
(:func:`dstbench.train.narrow.narrow_for`) and recorded in ``summary.json`` under ``method_report``.
Only models with a ``channel_multiplier`` can be narrowed: those dstbench registers (``tiny_cnn``
and the ``cifar_*`` backbones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dstbench.core.registry import register_method
from dstbench.core.updater import MaskUpdater, Needs


@register_method("small-dense")
@dataclass
class SmallDense(MaskUpdater):
    """Dense training of a network narrowed to the sparse one's active weights (no mask)."""

    paper = "RigL's Small-Dense baseline (Evci et al. 2020): a dense network narrowed to the sparse one's active weights"
    narrows_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._narrowing: dict[str, Any] = {}

    @property
    def needs(self) -> Needs:
        return Needs(sparse=False)

    def narrowed(self, record: Mapping[str, Any]) -> None:
        self._narrowing = dict(record)

    def report(self) -> dict[str, Any]:
        return {"narrowing": dict(self._narrowing)}
