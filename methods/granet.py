"""GraNet: gradual pruning with zero-cost neuroregeneration (Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen,
Pechenizkiy, Wang, Mocanu; NeurIPS 2021).

Follows VITA-Group/GraNet ``CIFAR/sparselearning/core.py`` (``Masking.step`` with ``--method GraNet``,
``pruning``, ``truncate_weights``, ``magnitude_death``, ``gradient_growth``, ``CosineDecay``)::

    init: random masks at initial_density (layer counts spread like the plan's distribution)
    every delta_t steps (boundary b = steps done), whole run:
        # gradual magnitude pruning (Zhu & Gupta's cubic ramp), global across layers
        if b in the pruning window [prune_start * T, prune_end * T]:
            p     = (b - b_start) / (b_end - b_start)         # b_end: the last update in the window
            total = K + round((K_0 - K) * (1 - p)^3)          # K_0 at initial_density, K the plan's
            keep the top-total |theta| over all sparsified layers         # layer counts move
        # zero-cost neuroregeneration, per layer (counts unchanged by it)
        r     = death_rate_min + (death_rate - death_rate_min)/2 * (1 + cos(pi * b / T))
        n     = active weights of the layer;  d = ceil(r * n)
        keep  = top-(n - d) |theta| on the mask
        grow  = top-d |dense gradient| off keep               # just-removed entries may come back
        mask  = keep | grow                                   # grown weights start at 0

The dense gradient is needed only on update steps (``dense_grad="update_steps"``); the global total
follows the ramp exactly at every update (``density_policy="scheduled_global"``) and ends at the plan's.

Departure: the global pruning is the shared :func:`dstbench.core.global_select.global_topk` with its
layer-collapse guard (each layer keeps its ``--min-active`` largest weights, default 1). GraNet's
``pruning`` thresholds all layers at once and can empty a layer at extreme sparsity, after which no
signal crosses it; ``--min-active 0`` restores that. The regeneration is the shared
:class:`~dstbench.core.dropgrow.DropAndGrow` step, applied to the masks the pruning left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from dstbench.core.distributions import active_count, layer_densities
from dstbench.core.dropgrow import DropAndGrow
from dstbench.core.errors import ConfigError
from dstbench.core.global_select import global_topk
from dstbench.core.hparams import Fraction, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import CosineDecay, CubicRamp, Periodic, steps_at
from dstbench.core.updater import MaskedLayer, Needs, RunView, StepInfo, Targets, UpdateContext, random_mask

__all__ = ["GraNet"]


@register_method("granet")
@dataclass
class GraNet(DropAndGrow):
    paper = "Liu et al., Sparse Training via Boosting Pruning Plasticity with Neuroregeneration, NeurIPS 2021"
    cadence_fields = {"delta_t": "steps"}

    initial_density: Fraction = 0.5
    """Density of the sparsified layers before training (``--init-density``; 1.0 is GMP's dense start)."""
    death_rate: Fraction = 0.5
    """Initial fraction of a layer's active weights regenerated at an update (``--prune-rate``)."""
    death_rate_min: Fraction = 0.005
    """Floor of the per-step cosine decay of ``death_rate`` (``CosineDecay(eta_min=0.005)``)."""
    delta_t: PositiveInt = 1000
    """Steps between updates (``--update-frequency``)."""
    prune_start: Fraction = 0.0
    """Fraction of training at which gradual pruning starts (``--init-prune-epoch``)."""
    prune_end: Fraction = 0.5
    """Fraction of training by which the target density is reached (``--final-prune-epoch`` 80 of 160)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._initial: dict[str, int] = {}
        """Per layer: active count before training (derived from the plan; not state)."""
        self._layers: list[MaskedLayer] = []
        self._min_active = 1

    def validate(self) -> None:
        if self.death_rate_min > self.death_rate:
            raise ConfigError(f"granet: death_rate_min ({self.death_rate_min}) exceeds death_rate ({self.death_rate})")
        if self.prune_start > self.prune_end:
            raise ConfigError(f"granet: prune_start ({self.prune_start}) is after prune_end ({self.prune_end})")

    @property
    def needs(self) -> Needs:
        return Needs(dense_grad="update_steps", density_policy="scheduled_global")

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.delta_t)

    def setup(self, run: RunView) -> None:
        self._initial = self.initial_counts(run.sparse_layers, run.plan.distribution)
        self._layers = run.sparse_layers
        self._min_active = run.plan.min_active

    def initial_counts(self, layers: list[MaskedLayer], distribution: str) -> dict[str, int]:
        """The plan's distribution at ``initial_density`` (never below a layer's final count)."""
        if not layers:
            return {}
        densities = layer_densities([layer.target.layer for layer in layers], 1.0 - self.initial_density, distribution)
        return {layer.name: max(layer.k, active_count(layer.numel, densities[layer.name])) for layer in layers}

    # -- the cubic ramp ------------------------------------------------------------------------------
    def ramp_end(self, total_steps: int) -> int:
        """Boundary of the last update inside the pruning window (0: no update there, no ramp)."""
        last = steps_at(self.prune_end, total_steps) // self.delta_t * self.delta_t
        return last if last > steps_at(self.prune_start, total_steps) else 0

    def remaining(self, boundary: int, total_steps: int) -> float:
        """Fraction of the initial excess over the plan still held after boundary ``boundary``."""
        end = self.ramp_end(total_steps)
        if end == 0:
            return 0.0
        return CubicRamp(1.0, 0.0, start=self.prune_start, end=end / total_steps).at(boundary, total_steps)

    def total_at(self, info: StepInfo, layers: list[MaskedLayer]) -> int:
        """The ramp's total after an update decided at ``info.step``: the plan's plus what is left of
        the initial excess."""
        final = sum(layer.k for layer in layers)
        initial = sum(self._initial.get(layer.name, layer.k) for layer in layers)
        return final + round((initial - final) * self.remaining(max(info.boundary, 0), info.total_steps))

    def targets(self, info: StepInfo, layers: list[MaskedLayer]) -> Targets:
        return Targets(total=self.total_at(info, layers))

    def death_rate_at(self, info: StepInfo) -> float:
        """GraNet's ``CosineDecay``: annealed once per step over the whole run (T_max = T)."""
        return CosineDecay(self.death_rate, self.death_rate_min).at(info.boundary, info.total_steps)

    # -- neuroregeneration: drop-and-grow on the pruned masks -------------------------------------------
    def drop_fraction_at(self, ctx: UpdateContext) -> float:
        return self.death_rate_at(ctx.info)

    def drop_count(self, fraction: float, n_active: int) -> int:
        """``magnitude_death``: ``ceil(death_rate * nonzeros)``."""
        return min(n_active, math.ceil(fraction * n_active))

    def grow_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        """``gradient_growth``: |dense gradient|."""
        return ctx.grad(layer).abs()

    # -- decisions -----------------------------------------------------------------------------------
    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        # With no update in the pruning window the ramp is empty: start at the plan.
        start = self.remaining(0, ctx.info.total_steps) > 0
        return {
            layer.name: random_mask(layer.weight.shape, self._initial[layer.name] if start else layer.k, ctx.rng)
            for layer in ctx.sparse_layers
        }

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        layers = ctx.sparse_layers
        total = self.total_at(ctx.info, layers)
        active = {layer.name: layer.mask.clone() for layer in layers}
        if total < sum(int(m.sum()) for m in active.values()):
            magnitudes = {layer.name: layer.weight.detach().abs() for layer in layers}
            active = global_topk(magnitudes, total, min_active=self._min_active, eligible=active, prefer=active).masks
        rate = self.drop_fraction_at(ctx)
        return {layer.name: self.drop_and_grow(ctx, layer, rate, active[layer.name]) for layer in layers}

    def report(self) -> dict[str, Any]:
        """Where global pruning put the weights; a layer it emptied (only with ``--min-active 0``) is listed."""
        active = {layer.name: int(layer.mask.sum()) for layer in self._layers}
        return {
            "initial_active": dict(self._initial),
            "active": active,
            "collapsed_layers": [name for name, count in active.items() if count == 0],
        }

    def state_dict(self) -> dict[str, Any]:
        return {}
