"""RigL: Rigging the Lottery (Evci, Gale, Menick, Castro, Elsen; ICML 2020). Spec §2.

Every ``delta_t`` steps until ``t_end`` of training::

    drop_fraction(t) = alpha/2 * (1 + cos(pi * t / T_end))
    keep  = top-(n - floor(drop_fraction * n)) of |theta| on the active set
    grow  = top-(k - |keep|) of |dense gradient| off keep   # just-dropped entries may come back
    M     = keep | grow                                     # grown weights start at 0 (engine)

The dense gradient is needed only on update steps. The TF reference skips the weight update on a mask
step (``skip_weight_update_on_mask_step``), and also fires at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dstbench.dropgrow import DropAndGrow, cosine_decay
from dstbench.registry import register_method
from dstbench.updater import MaskedLayer, Needs, StepInfo, UpdateContext


@register_method("rigl")
@dataclass
class RigL(DropAndGrow):
    paper = "Evci et al., Rigging the Lottery, ICML 2020"

    drop_fraction: float = 0.3
    """Initial drop fraction alpha, cosine-annealed to 0 at ``t_end``."""
    delta_t: int = 100
    """Iterations between mask updates (Delta T)."""
    t_end: float = 0.75
    """Fraction of training after which the mask is frozen."""
    skip_weight_update_on_mask_step: bool = True
    """TF RigL applies no optimizer step on mask-update steps; PyTorch ports (ITOP) do both."""
    drop_noise_std: float = 0.0
    """Std of Gaussian noise added to drop scores (TF uses 1e-5); 0 relies on the deterministic tie-break."""

    @property
    def needs(self) -> Needs:
        return Needs(dense_grad="update_steps")

    def end_step(self, info: StepInfo) -> int:
        return int(self.t_end * info.total_steps)

    def is_update_step(self, info: StepInfo) -> bool:
        return info.step >= 0 and info.step % self.delta_t == 0 and info.step <= self.end_step(info)

    def skips_optimizer_step(self, info: StepInfo) -> bool:
        return self.skip_weight_update_on_mask_step

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        return cosine_decay(self.drop_fraction, ctx.info.step, self.end_step(ctx.info))

    def drop_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        scores = layer.weight.detach().abs()
        if self.drop_noise_std > 0:
            noise = torch.randn(scores.shape, generator=ctx.rng).to(scores.device)
            scores = scores + self.drop_noise_std * noise
        return scores

    def grow_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        return ctx.grad(layer).abs()
