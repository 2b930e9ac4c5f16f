"""SNFS, sparse momentum (Dettmers & Zettlemoyer, "Sparse Networks from Scratch", 2019).

Read from the official code (``sparselearning/core.py: Masking.truncate_weights, gather_statistics,
adjust_prune_rate, calc_growth_redistribution``; ``funcs.py: momentum_redistribution, magnitude_prune,
momentum_growth``)::

    p(t) = eta_min + (p0 - eta_min)/2 * (1 + cos(pi * (t+1) / T))     # p0 = 0.5, eta_min = 0.005, per step
    at the end of every epoch but the last:
        share_l = mean |momentum_l| over M_l, normalised so that sum_l share_l = 1
        p_l     = min(sparsity_l, p) if layer l is > 80 % dense and growing (share_l > 1/L), else p
        prune   : remove the ceil(p_l * |M_l|) smallest |theta| of M_l          (removed_l)
        regrow  : sum_l removed_l weights in all, split in proportion to share_l,
                  each layer capped at 0.99 * (its zeros after pruning); a capped layer's excess is
                  spread evenly over the uncapped layers until nothing exceeds a cap
        grow    : per layer, the regrow_l inactive positions with the largest |momentum| (just-pruned
                  allowed); new theta = 0
    every step: the gradient and the momentum stay dense (only the weights are masked)

Layer counts move between layers; the total stays fixed (``density_policy="global"``). The official
code floors every layer's regrowth and corrects the resulting drift in the total at later updates
(``adjusted_growth``). Here the split is rounded by largest remainders, so the total is preserved
exactly at every update and that correction is always zero. The initial masks have exact per-layer
counts (the official ``constant`` init draws Bernoulli(density) per weight).

Recipe notes (trainer options): SGD momentum 0.9 with Nesterov (``--nesterov``), wd 5e-4. With Adam the
momentum is ``m1 / (sqrt(m2) + 1e-8)``, as in the official code.

Optimizer state: because SNFS declares ``masked_optimizer=False``, the engine never touches the
momentum buffer, as in the official code: a grown weight keeps the momentum that selected it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Fraction
from dstbench.core.registry import register_method
from dstbench.core.schedules import CosineDecay, Periodic
from dstbench.core.selection import apportion, topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, RunView, StepInfo, UpdateContext

__all__ = ["SNFS"]

# ``adjust_prune_rate``: a layer with less than 20 % zeros that keeps growing prunes at most its sparsity.
_DENSE_LAYER_SPARSITY = 0.2
# ``calc_growth_redistribution``: a layer regrows at most 99 % of its free positions.
_REGROWTH_CAP = 0.99


@register_method("snfs")
@dataclass
class SNFS(MaskUpdater):
    """Magnitude pruning, momentum-guided growth and cross-layer redistribution, every epoch."""

    paper = "Dettmers & Zettlemoyer, Sparse Networks from Scratch: Faster Training without Losing Performance, 2019"

    prune_rate: Fraction = 0.5
    """Initial fraction p of each layer's active weights pruned per update (``--prune-rate``)."""
    prune_rate_min: Fraction = 0.005
    """``eta_min`` of the per-step cosine decay of the prune rate over the whole run."""

    @property
    def needs(self) -> Needs:
        # Growth reads the momentum of inactive weights, so gradients and momentum stay dense every step
        # (training cost 2 f_S + f_D); per-layer counts move, only the total is fixed.
        return Needs(dense_grad="every_step", masked_optimizer=False, density_policy="global", reads_momentum=True)

    def validate(self) -> None:
        if self.prune_rate_min > self.prune_rate:
            raise ConfigError(
                f"snfs: need prune_rate_min <= prune_rate, got {self.prune_rate_min} and {self.prune_rate}"
            )

    def setup(self, run: RunView) -> None:
        if any(group.get("momentum", None) == 0 for group in run.optimizer_groups):
            raise ConfigError("snfs grows weights by their momentum: use --momentum > 0")

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(1, unit="epochs")

    def prune_rate_at(self, info: StepInfo) -> float:
        """The official ``CosineDecay`` is stepped once per step, so after step t it has run t+1 times."""
        return self._prune_rate.at(info.boundary, info.total_steps)

    @cached_property
    def _prune_rate(self) -> CosineDecay:
        return CosineDecay(self.prune_rate, self.prune_rate_min)

    # -- statistics --------------------------------------------------------------------------------
    def momentum(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        """|momentum| of every entry: SGD's buffer; with a second moment (Adam family, LAMB) the official
        code's m1 / (sqrt(m2) + 1e-8); Lion's m1 alone (its step is sign-based, it keeps no m2)."""
        state = ctx.optimizer_state(layer)
        if isinstance(state.get("exp_avg"), torch.Tensor):
            second = state.get("exp_avg_sq")
            if isinstance(second, torch.Tensor):
                return (state["exp_avg"] / (second.sqrt() + 1e-8)).abs()
            return state["exp_avg"].abs()
        buffer = state.get("momentum_buffer")
        if not isinstance(buffer, torch.Tensor):
            raise ConfigError("snfs grows weights by their momentum: use SGD with --momentum > 0, or Adam")
        return buffer.abs()

    def shares(self, layers: list[MaskedLayer], momenta: list[torch.Tensor]) -> list[float]:
        """Each layer's share of the regrowth: mean |momentum| over its active weights, normalised."""
        means = [float(m[layer.mask].mean()) if layer.mask.any() else 0.0 for layer, m in zip(layers, momenta)]
        total = sum(means)
        if total == 0.0:
            return [1.0 / len(layers)] * len(layers)
        return [mean / total for mean in means]

    def layer_prune_rate(self, layer: MaskedLayer, share: float, rate: float, n_layers: int) -> float:
        """``adjust_prune_rate``: a nearly dense layer that is still growing prunes at most its sparsity."""
        sparsity = 1.0 - int(layer.mask.sum()) / layer.numel
        if sparsity < _DENSE_LAYER_SPARSITY and share > 1.0 / n_layers:
            return min(sparsity, rate)
        return rate

    def regrowth_caps(self, layers: list[MaskedLayer], kept: list[torch.Tensor], total: int) -> list[int]:
        """99 % of each layer's free positions; all of them if 99 % cannot hold what was removed."""
        free = [layer.numel - int(keep.sum()) for layer, keep in zip(layers, kept)]
        caps = [math.floor(_REGROWTH_CAP * n) for n in free]
        return caps if sum(caps) >= total else free

    # -- update ------------------------------------------------------------------------------------
    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        layers = ctx.sparse_layers
        if not layers:
            return {}
        momenta = [self.momentum(ctx, layer) for layer in layers]
        shares = self.shares(layers, momenta)
        rate = self.prune_rate_at(ctx.info)
        kept = []
        for layer, share in zip(layers, shares):
            n_active = int(layer.mask.sum())
            n_remove = math.ceil(self.layer_prune_rate(layer, share, rate, len(layers)) * n_active)
            magnitude = layer.weight.detach().abs()
            kept.append(topk_mask(magnitude, n_active - n_remove, eligible=layer.mask, prefer=layer.mask))
        removed = sum(int(layer.mask.sum()) - int(keep.sum()) for layer, keep in zip(layers, kept))
        regrowth = apportion(shares, removed, self.regrowth_caps(layers, kept, removed))
        return {
            layer.name: keep | topk_mask(momentum, n, eligible=~keep, prefer=layer.mask)
            for layer, keep, momentum, n in zip(layers, kept, momenta, regrowth)
        }
