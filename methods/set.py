"""SET: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

At the end of every epoch but the last, per layer::

    n_rm = ceil(zeta * |M|)
    drop ceil(n_rm/2) smallest positive and ceil(n_rm/2) closest-to-zero negative active weights
         (``drop_criterion="magnitude"``: the n_rm smallest |theta|)
    grow as many uniformly random inactive positions (just-dropped allowed), zero-initialised

Growth is an exact count, not ITOP's Bernoulli sample, so layer counts never drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from dstbench.core.dropgrow import DropAndGrow
from dstbench.core.hparams import Fraction, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdate, UpdateContext


def init_distribution_sample(weight: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """A draw shaped like ``weight`` from PyTorch's default Conv/Linear initialisation,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``)."""
    fan_in = weight[0].numel() if weight.dim() > 1 else weight.numel()
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    uniform = torch.rand(weight.shape, generator=rng, dtype=torch.float32)
    return ((uniform * 2 - 1) * bound).to(weight.device, weight.dtype)


@register_method("set")
@dataclass
class SET(DropAndGrow):
    paper = "Mocanu et al., Sparse Evolutionary Training, Nat. Commun. 2018"
    cadence_fields = {"update_frequency": "epochs"}

    zeta: Fraction = 0.3
    """Fraction of each layer's active weights replaced per update."""
    drop_criterion: Literal["magnitude_and_negativity", "magnitude"] = "magnitude_and_negativity"
    """Original SET removes the smallest positive and the largest negative weights, half each."""
    update_frequency: PositiveInt = 1
    """Epochs between updates (1 = the end of every epoch)."""
    grow_init: Literal["zero", "init_dist"] = "zero"
    """Value of grown weights: 0 (RigL's convention, the default here), or a fresh draw from the
    layer's initialisation distribution as in the original SET code (Kaiming-uniform bound of the layer,
    from the update's seeded generator)."""

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.update_frequency, unit="epochs")

    def update(self, ctx: UpdateContext) -> MaskUpdate:
        masks = super().update(ctx)
        assert isinstance(masks, dict)  # DropAndGrow's masks
        if self.grow_init == "zero":
            return MaskUpdate(masks)
        return MaskUpdate(masks, grown={layer.name: init_distribution_sample(layer.weight, ctx.rng) for layer in ctx.sparse_layers})

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        return self.zeta

    def drop_count(self, fraction: float, n_active: int) -> int:
        n_remove = math.ceil(fraction * n_active)
        if self.drop_criterion == "magnitude":
            return n_remove
        return min(n_active, 2 * math.ceil(n_remove / 2))

    def keep_mask(self, ctx: UpdateContext, layer: MaskedLayer, n_keep: int, active: torch.Tensor | None = None) -> torch.Tensor:
        if self.drop_criterion == "magnitude":
            return super().keep_mask(ctx, layer, n_keep, active)
        mask = layer.mask if active is None else active
        weight = layer.weight.detach()
        n_drop = int(mask.sum()) - n_keep
        half = n_drop // 2
        positive = mask & (weight >= 0)
        negative = mask & (weight < 0)
        # Closest to zero on each side: the smallest positives, the largest negatives.
        drop_pos = topk_mask(-weight, min(half, int(positive.sum())), eligible=positive)
        drop_neg = topk_mask(weight, min(half, int(negative.sum())), eligible=negative)
        dropped = drop_pos | drop_neg
        shortfall = n_drop - int(dropped.sum())  # one sign had too few weights: take the rest by |theta|
        if shortfall:
            remaining = mask & ~dropped
            dropped |= topk_mask(-weight.abs(), shortfall, eligible=remaining)
        return mask & ~dropped
