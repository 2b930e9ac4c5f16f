"""``magnitude-random``: the SET variant of the RigL paper (Evci et al. 2020, spec §3, last paragraph).

Every ``delta_t`` steps until ``t_end`` of training, per sparsified layer::

    fraction = drop_fraction/2 * (1 + cos(pi * t / T_end))
    keep = top-(n - floor(fraction * n)) of |theta| on the active set     # DropAndGrow.drop_scores
    grow = k - |keep| uniformly random inactive positions (just-dropped allowed)   # DropAndGrow.grow_scores

It differs from dstbench's ``rigl`` in one score (random instead of gradient growth) and, because of
that, in one declaration: it never reads the gradient of an inactive weight, so ``needs`` says
``dense_grad="never"`` and the FLOP accountant charges it like static sparse training (3 f_S per
sample), not RigL's periodic dense backward pass.

The class carries no ``@register_method``: the entry point in ``pyproject.toml`` registers it under
the name ``magnitude-random``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dstbench.dropgrow import DropAndGrow, cosine_decay
from dstbench.errors import ConfigError
from dstbench.updater import Needs, StepInfo, UpdateContext

__all__ = ["MagnitudeRandom"]


@dataclass
class MagnitudeRandom(DropAndGrow):
    """Magnitude drop, random growth, on RigL's schedule."""

    paper = "Evci et al., Rigging the Lottery (its SET baseline: magnitude drop, random growth), ICML 2020"

    drop_fraction: float = 0.3
    """Initial fraction of each layer's active weights replaced, cosine-annealed to 0 at ``t_end``."""
    delta_t: int = 100
    """Steps between topology updates."""
    t_end: float = 0.75
    """Fraction of training after which the mask stays fixed."""

    def __post_init__(self) -> None:
        # Bad hyper-parameters are user input: fail with one line before training starts.
        if self.delta_t < 1:
            raise ConfigError(f"magnitude-random: delta_t must be >= 1, got {self.delta_t}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ConfigError(f"magnitude-random: drop_fraction must be in [0, 1], got {self.drop_fraction}")

    @property
    def needs(self) -> Needs:
        # Random growth reads no gradient of inactive weights: no dense gradient, ever.
        return Needs(dense_grad="never")

    def end_step(self, info: StepInfo) -> int:
        return int(self.t_end * info.total_steps)

    def is_update_step(self, info: StepInfo) -> bool:
        return info.step >= 0 and info.step % self.delta_t == 0 and info.step <= self.end_step(info)

    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        return cosine_decay(self.drop_fraction, ctx.info.step, self.end_step(ctx.info))
