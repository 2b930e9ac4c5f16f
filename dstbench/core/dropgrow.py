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
from dstbench.core.updater import MaskedLayer, MaskUpdate, MaskUpdater, UpdateContext

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

    def keep_mask(self, ctx: UpdateContext, layer: MaskedLayer, n_keep: int, active: torch.Tensor | None = None) -> torch.Tensor:
        """The ``n_keep`` best active weights by drop score (``active``: the layer's mask by default)."""
        active = layer.mask if active is None else active
        return topk_mask(self.drop_scores(ctx, layer), n_keep, eligible=active, prefer=active)

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor] | MaskUpdate:
        fraction = self.drop_fraction_at(ctx)
        return {layer.name: self.drop_and_grow(ctx, layer, fraction) for layer in ctx.sparse_layers}

    def drop_and_grow(
        self, ctx: UpdateContext, layer: MaskedLayer, fraction: float, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One layer's new mask: drop ``fraction`` of ``active`` (default: its mask), then grow back to
        ``|active|`` (default: the layer's target ``k``). GraNet passes the mask its global pruning left."""
        n_active = int((layer.mask if active is None else active).sum())
        n_keep = n_active - self.drop_count(fraction, n_active)
        # 0.2 plugins may override keep_mask without ``active``: pass it only when it is not the mask.
        keep = self.keep_mask(ctx, layer, n_keep) if active is None else self.keep_mask(ctx, layer, n_keep, active)
        n_grow = (layer.k if active is None else n_active) - int(keep.sum())
        grow = topk_mask(self.grow_scores(ctx, layer), n_grow, eligible=~keep, prefer=layer.mask)
        return keep | grow

    def drop_count(self, fraction: float, n_active: int) -> int:
        """RigL's ``floor(fraction * n_active)``; SET overrides with its ceil convention."""
        return math.floor(fraction * n_active)
