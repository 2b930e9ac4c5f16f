"""Drop-and-grow: the skeleton SET, RigL and their descendants share (jaxpruner's ``SparseTrainer``).

Each update, per sparsified layer: keep the best ``n_active - n_drop`` active weights by a *drop
score*, then activate the best ``k - n_keep`` inactive ones by a *grow score* (just-dropped entries are
eligible again). Subclasses override only the scores, the count and the schedule, so RigL really is
"SET with ``grow_score = |grad|``". Selection goes through the shared exact top-k kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dstbench.core.schedules import cosine_decay
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, UpdateContext

# ``cosine_decay`` lives in :mod:`dstbench.core.schedules`; it stays importable from here for plugins.
__all__ = ["DropAndGrow", "cosine_decay"]


@dataclass
class DropAndGrow(MaskUpdater):
    """Base for magnitude-drop / score-grow methods. Subclasses set the fraction and the scores."""

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        """Fraction of a layer's active weights replaced at this update."""
        raise NotImplementedError

    def drop_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        """Higher is kept. Default: weight magnitude."""
        return layer.weight.detach().abs()

    def grow_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        """Higher is grown. Default: uniformly random (SET)."""
        return ctx.uniform(layer.weight)

    def keep_mask(self, ctx: UpdateContext, layer: MaskedLayer, n_keep: int) -> torch.Tensor:
        return topk_mask(self.drop_scores(ctx, layer), n_keep, eligible=layer.mask, prefer=layer.mask)

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        fraction = self.drop_fraction_at(ctx)
        new_masks = {}
        for layer in ctx.sparse_layers:
            n_active = int(layer.mask.sum())
            n_keep = n_active - self.drop_count(fraction, n_active)
            keep = self.keep_mask(ctx, layer, n_keep)
            n_grow = layer.k - int(keep.sum())
            grow = topk_mask(self.grow_scores(ctx, layer), n_grow, eligible=~keep, prefer=layer.mask)
            new_masks[layer.name] = keep | grow
        return new_masks

    def drop_count(self, fraction: float, n_active: int) -> int:
        """RigL's ``floor(fraction * n_active)``; SET overrides with its ceil convention."""
        return math.floor(fraction * n_active)
