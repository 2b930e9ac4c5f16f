"""RigL-ITOP: In-Time Over-Parameterization (Liu, Yin, Mocanu, Pechenizkiy; ICML 2021).

RigL's selection with an exploration-heavy schedule, as in the official PyTorch code
(``sparselearning/core.py``: ``Masking.step``, ``magnitude_death``, ``gradient_growth``, ``CosineDecay``)::

    after every optimizer step t (0-based; the weight update is NOT skipped):
        death_rate(t) = eta_min + (p0 - eta_min)/2 * (1 + cos(pi * (t+1) / T_end))   # p0 = 0.5, eta_min = 0.005
        if (t+1) % delta_t == 0:                                                      # delta_t = 4000 (CIFAR, bs 128)
            per sparsified layer:
                n_drop = ceil(death_rate * |M|)                  # ITOP rounds up (RigL TF floors)
                keep   = top-(|M| - n_drop) of |theta| on M
                grow   = top-n_drop of |dense gradient| off keep  # just-dropped entries are eligible
                M      = keep | grow                              # grown weights and momentum start at 0

``T_end`` is the whole run (ITOP has no mask-freeze point; ``t_end=1.0``). The ITOP rate
``R_s = |union of all masks| / N`` that the paper studies is what the engine already reports as
``itop_rate`` in ``summary.json``.

Recipe notes (these are trainer options, not hyper-parameters): ITOP uses ERK over every conv and FC
layer (``--distribution erk --dense-layers none``, the trainer's defaults). ``delta_t`` counts
iterations at the run's own batch size; ITOP's 4000 is at batch 128, so to keep the same number of
updates per epoch at batch ``b`` pass ``--hp delta_t=<4000*128/b>`` (the engine's ``StepInfo`` does
not carry the batch size, so the method cannot rescale it itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Fraction, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import CosineDecay, Periodic
from dstbench.core.updater import UpdateContext

from .rigl import RigL

__all__ = ["RigLITOP"]


@register_method("rigl-itop")
@dataclass
class RigLITOP(RigL):
    """RigL drop/grow on ITOP's schedule. Inherits RigL's scores, needs and drop noise."""

    paper = "Liu et al., Do We Actually Need Dense Over-Parameterization? In-Time Over-Parameterization, ICML 2021"

    drop_fraction: Fraction = 0.5
    """ITOP's ``--death-rate``: initial fraction of each layer's active weights replaced per update."""
    delta_t: PositiveInt = 4000
    """ITOP's ``--update_frequency``: iterations between mask updates (4000 at batch 128 on CIFAR)."""
    t_end: Fraction = 1.0
    """Fraction of training over which the death rate decays and updates happen; ITOP: the whole run."""
    skip_weight_update_on_mask_step: bool = False
    """ITOP (PyTorch) takes the optimizer step and then updates the mask; TF RigL skips the step."""
    drop_fraction_min: Fraction = 0.005
    """``eta_min`` of ITOP's ``CosineDecay``: the death rate never decays below this."""

    def validate(self) -> None:
        if self.drop_fraction_min > self.drop_fraction:
            raise ConfigError(
                f"rigl-itop: need drop_fraction_min <= drop_fraction, got {self.drop_fraction_min} and {self.drop_fraction}"
            )
        if self.t_end == 0.0:
            raise ConfigError("rigl-itop: t_end must be in (0, 1], got 0")

    @cached_property
    def schedule(self) -> Periodic:
        # ITOP counts steps from 1 (``self.steps += 1`` before the check), so its clock is t + 1; no
        # update after the last step, where a new mask would only replace trained weights by zeros.
        return Periodic(self.delta_t, stop=self.t_end)

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        # ``CosineDecay.step()`` has run once per step taken, i.e. ``step + 1`` times.
        decay = CosineDecay(self.drop_fraction, self.drop_fraction_min, end=self.t_end)
        return decay.at(ctx.info.boundary, ctx.info.total_steps)

    def drop_count(self, fraction: float, n_active: int) -> int:
        """ITOP's ``magnitude_death``: ``ceil(death_rate * nonzeros)``."""
        return min(n_active, math.ceil(fraction * n_active))
