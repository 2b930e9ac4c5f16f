"""DSR: Dynamic Sparse Reparameterization (Mostafa & Wang, ICML 2019).

Follows the authors' PyTorch release: ``dst/reparameterization.py`` (``DSModel.reparameterize`` =
``prune_by_threshold``, ``adjust_pruning_threshold``, ``reallocate_free_parameters`` with
``ReallocationHeuristics.paper``; ``StructuredSparseParameter.grow_to_sparsity``) and its CIFAR WRN
script (the ``rp_schedule`` of the reparameterisation period)::

    H   = 1e-3                         # global magnitude threshold (initial value)
    N_p = 1 % of the model's parameters (target_fraction_to_prune x param_count(model))
    every P(e) iterations (a counter of iterations since the last reparameterisation; e = the epoch):
        prune : every active weight of every sparse layer with |theta| < H      -> K pruned in all
        adapt : if   K < (1 - delta) N_p: H <- gain * H                        # delta = 0.1, gain = 2
                elif K > (1 + delta) N_p: H <- H / gain
        grow  : K weights in all; layer l gets K * R_l / sum_m R_m             # R_l: its survivors
                at uniformly random zero positions (just-pruned ones included), theta = 0
    P(e) = period * 2^(number of milestones m with e >= m), none once e >= stop
           milestones 40, 80, 120 and stop 160 of 200 epochs -> fractions 0.2, 0.4, 0.6 and 0.8

The layers' counts move (the paper's "global reparameterization"); the total is exact at every update
(``density_policy="global"``). Initial masks: the run's distribution with exact per-layer counts (the
official ``randomly_thin_to_group_sparsity`` gives every sparse layer the same sparsity: use
``--distribution uniform`` to match it; the paper keeps the first and last layers dense).

Departures from the reference code, all small:

* **Exact counts.** The official growth rounds every layer up (``grow_to_sparsity`` stops at *at most*
  the target sparsity), so the total can exceed the budget by up to one weight per layer; and a share
  larger than a layer's zero positions is cut to them with the excess dropped, so the total can also
  fall short (207 of 221 freed weights regrown in one ERK case). Here the split ``K * R_l / sum R`` is
  capped by each layer's zero positions, the excess spread over the others, and rounded by largest
  remainder (:func:`dstbench.core.selection.apportion`), so the total never drifts.
* **Collapse guard** (``min_layer_active``, default 1): a layer keeps at least its largest active
  weight through the threshold prune. The official code can empty a layer (then its share ``R_l`` is 0
  and it never grows back); ``--hp min_layer_active=0`` restores that.
* **Epoch milestones scale with the run**: the period doubles from the 0-based epoch ``floor(f * epochs)``
  on (epoch 40 of 0..199 at f = 0.2). The script compares ignite's 1-based epoch with 40, so its
  doublings (and its stop) come one epoch earlier, at 0-based epoch 39; on a short run that reading
  would double the period from the very first epoch.
* **No update after the last step** (it would change nothing that is trained or evaluated).
* **A just-pruned weight regrown at the same update keeps its (sub-threshold) value**, the project's
  convention for all drop/grow methods (docs/methods.md); the official code resets it to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import torch

from dstbench.core.hparams import Fraction, NonNegativeInt, Positive, PositiveInt, Range
from dstbench.core.registry import register_method
from dstbench.core.schedules import DoublingPeriodic
from dstbench.core.selection import apportion, topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, UpdateContext

__all__ = ["DSR", "adapt_threshold"]


def adapt_threshold(threshold: float, pruned: int, target: float, tolerance: float, gain: float) -> float:
    """``adjust_pruning_threshold``: raise H when too few weights fell below it, lower it when too many."""
    if pruned < target * (1.0 - tolerance):
        return threshold * gain
    if pruned > target * (1.0 + tolerance):
        return threshold / gain
    return threshold


@register_method("dsr")
@dataclass
class DSR(MaskUpdater):
    """Adaptive global magnitude threshold; freed weights regrow at random, split by surviving share."""

    paper = "Mostafa & Wang, Parameter Efficient Training of Deep CNNs by Dynamic Sparse Reparameterization, ICML 2019"
    cadence_fields = {"period": "steps"}

    initial_threshold: Positive = 1e-3
    """H at the first reparameterisation (``pruning_threshold=1e-3`` in the CIFAR scripts)."""
    target_fraction_to_prune: Annotated[float, Range(gt=0.0, le=1.0)] = 1e-2
    """N_p as a fraction of the model's parameters (``--fraction-to-prune``, default 1 %)."""
    tolerance: Fraction = 0.1
    """delta: H stays put while K lies in N_p (1 +- delta)."""
    gain: Annotated[float, Range(gt=1.0)] = 2.0
    """Factor by which H is raised or lowered."""
    period: PositiveInt = 100
    """Base reparameterisation period in iterations (``--period``)."""
    doubling_at: tuple[Fraction, ...] = (0.2, 0.4, 0.6)
    """Fractions of the epochs from which the period doubles (epochs 40, 80, 120 of 200)."""
    stop_at: Fraction = 0.8
    """Fraction of the epochs from which DSR stops reparameterising (epoch 160 of 200)."""
    min_layer_active: NonNegativeInt = 1
    """Collapse guard: each layer keeps at least this many of its largest weights (0: official code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.threshold = float(self.initial_threshold)
        self.reparameterizations = 0
        self.pruned_total = 0
        self.last_pruned = 0
        self.guarded = 0

    @property
    def needs(self) -> Needs:
        # Magnitudes and random growth: no dense gradient; layer counts move, the total is fixed.
        return Needs(density_policy="global")

    # -- when -----------------------------------------------------------------------------------------
    @cached_property
    def schedule(self) -> DoublingPeriodic:
        """``rp_schedule``: every ``period`` iterations since the last update, doubling at the milestones."""
        return DoublingPeriodic(self.period, tuple(self.doubling_at), self.stop_at)

    def period_at(self, epoch: int, total_epochs: int) -> int | None:
        """``rp_schedule``: the period during the 0-based ``epoch`` (None once DSR has stopped)."""
        return self.schedule.period_at(epoch, total_epochs)

    # -- what -----------------------------------------------------------------------------------------
    def prune_target(self, ctx: UpdateContext) -> float:
        """N_p: the fraction of ``param_count(model)``, every parameter as in ``DSModel.np_total``."""
        if ctx.model is not None:
            n_params = sum(p.numel() for p in ctx.model.parameters())
        else:
            n_params = sum(layer.numel for layer in ctx.sparse_layers)
        return self.target_fraction_to_prune * n_params

    def survivors(self, layer: MaskedLayer) -> torch.Tensor:
        """Active weights with |theta| >= H, plus the layer's largest ones up to the collapse guard."""
        magnitude = layer.weight.detach().abs()
        kept = layer.mask & (magnitude >= self.threshold)
        floor = min(self.min_layer_active, int(layer.mask.sum()))
        if int(kept.sum()) < floor:
            self.guarded += 1
            kept = topk_mask(magnitude, floor, eligible=layer.mask, prefer=layer.mask)
        return kept

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        layers = ctx.sparse_layers
        if not layers:
            return {}
        kept = [self.survivors(layer) for layer in layers]
        pruned = sum(int(layer.mask.sum()) - int(keep.sum()) for layer, keep in zip(layers, kept))
        self.threshold = adapt_threshold(self.threshold, pruned, self.prune_target(ctx), self.tolerance, self.gain)
        survivors = [int(keep.sum()) for keep in kept]
        total = sum(survivors)
        shares = [r / total for r in survivors] if total else [layer.numel / sum(lay.numel for lay in layers) for layer in layers]
        growth = apportion(shares, pruned, [layer.numel - r for layer, r in zip(layers, survivors)])
        self.reparameterizations += 1
        self.pruned_total += pruned
        self.last_pruned = pruned
        return {
            layer.name: keep | topk_mask(ctx.uniform(layer.weight), n, eligible=~keep, prefer=layer.mask)
            for layer, keep, n in zip(layers, kept, growth)
        }

    # -- state and report -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "reparameterizations": self.reparameterizations,
            "pruned_total": self.pruned_total,
            "last_pruned": self.last_pruned,
            "guarded": self.guarded,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold = float(state["threshold"])
        self.reparameterizations = int(state["reparameterizations"])
        self.pruned_total = int(state["pruned_total"])
        self.last_pruned = int(state["last_pruned"])
        self.guarded = int(state["guarded"])

    def report(self) -> dict[str, Any]:
        return {
            "final_threshold": self.threshold,
            "reparameterizations": self.reparameterizations,
            "mean_pruned_per_reparameterization": self.pruned_total / self.reparameterizations if self.reparameterizations else 0.0,
            "layers_kept_by_collapse_guard": self.guarded,
        }
