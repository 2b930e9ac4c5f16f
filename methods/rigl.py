"""RigL: Rigging the Lottery (Evci, Gale, Menick, Castro, Elsen; ICML 2020).

Follows google-research/rigl ``rigl/sparse_optimizers.py`` (``SparseRigLOptimizer``,
``SparseSETOptimizer.generic_mask_update``, ``get_drop_fraction``)::

    at iterations whose global step g satisfies g % delta_t == 0 and g <= t_end * T:
        drop_fraction(g) = alpha/2 * (1 + cos(pi * g / (t_end * T)))
        keep  = top-(n - floor(drop_fraction * n)) of |theta| on the active set
        grow  = top-(k - |keep|) of |dense gradient| off keep   # just-dropped entries may come back
        M     = keep | grow                                     # grown weights start at 0 (engine)
        (this iteration applies no weight update, and g does not advance: the mask step replaces the
         optimizer step inside ``tf.cond``, so delta_t weight updates separate two mask updates)

The dense gradient is needed only on update steps. ``count_mask_steps=True`` restores dstbench 0.1's
clock, which advanced on mask steps too (delta_t - 1 weight updates in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from dstbench.core.dropgrow import DropAndGrow
from dstbench.core.hparams import Fraction, NonNegative, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import CosineDecay, Periodic
from dstbench.core.updater import MaskedLayer, Needs, UpdateContext


@register_method("rigl")
@dataclass
class RigL(DropAndGrow):
    paper = "Evci et al., Rigging the Lottery, ICML 2020"
    cadence_fields = {"delta_t": "steps"}

    drop_fraction: Fraction = 0.3
    """Initial drop fraction alpha, cosine-annealed to 0 at ``t_end``."""
    delta_t: PositiveInt = 100
    """Iterations between mask updates (Delta T)."""
    t_end: Fraction = 0.75
    """Fraction of training after which the mask is frozen."""
    skip_weight_update_on_mask_step: bool = True
    """TF RigL applies no optimizer step on mask-update steps; PyTorch ports (ITOP) do both."""
    drop_noise_std: NonNegative = 0.0
    """Std of Gaussian noise added to drop scores (TF uses 1e-5); 0 relies on the deterministic tie-break."""
    count_mask_steps: bool = False
    """With skipped weight updates: False counts steps like TF's global step, which a mask step does
    not advance (delta_t weight updates between mask updates); True counts every iteration
    (delta_t - 1 weight updates between them, dstbench 0.1)."""

    @property
    def needs(self) -> Needs:
        return Needs(dense_grad="update_steps", skip_optimizer_on_update=self.skip_weight_update_on_mask_step)

    @cached_property
    def schedule(self) -> Periodic:
        # Fires after steps 0, delta_t, ... (offset 1: the clock is the step just taken, TF's g).
        paused = self.skip_weight_update_on_mask_step and not self.count_mask_steps
        return Periodic(self.delta_t, offset=1, stop=self.t_end, at_end=True, pause_on_update=paused)

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        clock = self.schedule.clock(ctx.info)
        return CosineDecay(self.drop_fraction, end=self.t_end).at(clock, ctx.info.total_steps)

    def drop_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        scores = layer.weight.detach().abs()
        if self.drop_noise_std > 0:
            noise = torch.randn(scores.shape, generator=ctx.rng).to(scores.device)
            scores = scores + self.drop_noise_std * noise
        return scores

    def grow_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        return ctx.grad(layer).abs()
