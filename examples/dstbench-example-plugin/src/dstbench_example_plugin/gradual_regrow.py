"""``gradual-regrow``: gradual magnitude pruning with gradient regrowth, GraNet-style (Liu et al.,
NeurIPS 2021), written only against dstbench's public contract (v2) to show three of its parts:

* a **schedule object** (:class:`dstbench.schedules.Periodic`) instead of a hand-written
  ``is_update_step``: every ``delta_t`` steps until ``prune_end`` of training;
* **scheduled layer targets** (``density_policy="scheduled"`` and :meth:`layer_targets`): each layer
  starts at ``initial_sparsity`` and shrinks along Zhu & Gupta's cubic ramp
  (:class:`dstbench.schedules.CubicRamp`) to the plan's count, which the engine checks at every update
  and at the end, and which ``dstbench flops`` integrates in its prediction;
* gradient **regrowth**, with the dense gradient declared only on update steps (its FLOP cost)::

    at every update (boundary b), per sparsified layer with plan count k and initial count k0:
        k_b  = k + round((k0 - k) * (1 - b / b_end)^3)      # the cubic ramp, b_end = last update
        r    = floor(regrow_fraction * k_b)
        keep = top-(k_b - r) of |theta| on the mask          # prune to the ramp, and r more
        grow = top-r of |dense gradient| off keep            # regrow r by gradient (zero-initialised)

It is an example, not GraNet itself: GraNet prunes globally and decays its regrowth fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dstbench.hparams import Fraction, PositiveInt
from dstbench.schedules import CubicRamp, Periodic, steps_at
from dstbench.selection import topk_mask
from dstbench.updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext

__all__ = ["GradualRegrow"]


@dataclass
class GradualRegrow(MaskUpdater):
    """Gradual magnitude pruning from ``initial_sparsity`` to the target, with gradient regrowth."""

    paper = "example: gradual pruning + gradient regrowth, after GraNet (Liu et al., NeurIPS 2021)"
    cadence_fields = {"delta_t": "steps"}

    initial_sparsity: Fraction = 0.5
    """Sparsity of every layer before training (never below the layer's final density)."""
    delta_t: PositiveInt = 100
    """Steps between updates."""
    prune_end: Fraction = 0.75
    """Fraction of training by which every layer has reached its final count."""
    regrow_fraction: Fraction = 0.1
    """Fraction of a layer's active weights replaced by gradient regrowth at each update."""

    @property
    def needs(self) -> Needs:
        return Needs(dense_grad="update_steps", density_policy="scheduled")

    def schedule(self) -> Periodic:
        return Periodic(self.delta_t, stop=self.prune_end)

    def layer_targets(self, info: StepInfo, layers: list[MaskedLayer]) -> dict[str, int]:
        # The ramp ends at the last update the schedule makes, so the final counts are the plan's.
        last_update = steps_at(self.prune_end, info.total_steps) // self.delta_t * self.delta_t
        remaining = CubicRamp(1.0, 0.0, end=last_update / info.total_steps).at(info.boundary, info.total_steps)
        targets = {}
        for layer in layers:
            initial = max(layer.k, layer.numel - int(self.initial_sparsity * layer.numel))
            targets[layer.name] = layer.k + round((initial - layer.k) * remaining)
        return targets

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        targets = self.layer_targets(ctx.info, ctx.sparse_layers)
        masks = {}
        for layer in ctx.sparse_layers:
            count = targets[layer.name]
            regrow = int(self.regrow_fraction * count)
            keep = topk_mask(layer.weight.detach().abs(), count - regrow, eligible=layer.mask, prefer=layer.mask)
            grow = topk_mask(ctx.grad(layer).abs(), regrow, eligible=~keep, prefer=layer.mask)
            masks[layer.name] = keep | grow
        return masks
