"""FLOP accounting in RigL's App. H convention (Evci et al. 2020): what training and inference cost.

Forward FLOPs are read from the model itself: one forward pass of a single zero image, with a hook on
every conv and linear layer, gives each layer's real output shape; multiply-adds × 2 follow from it (no
per-architecture table). Each layer is then scaled by its density ``d_l = active_l / numel_l``::

    f_D = Σ_l F_l                 f_S = Σ_l d_l · F_l          inference FLOPs = f_S

A training step costs, per sample, a forward pass (f_S), an input-gradient pass (f_S) and a
weight-gradient pass at the density at which the method reads gradients, which its declared
``Needs.dense_grad`` states::

    "never"          3 f_S                                          static, SET, MEST
    "update_steps"   2 f_S + f_G on the steps the schedule fires,   RigL: (3 f_S ΔT + 2 f_S + f_D)/(ΔT+1)
                     3 f_S on all other steps                             until T_end, then 3 f_S
    "every_step"     2 f_S + f_G                                    SNFS (f_G = f_D), BiDST (f_(A∪S))
    dense training   3 f_D   (its plan keeps every layer dense, so f_S = f_D: no special case)

``f_G`` is f_D unless the method's ``Needs.gradient_density`` names per-layer densities (BiDST: G only on
the active set plus its search space) or the method keeps backward sets (Top-KAST: ``f_B``, the
density of ``B``). Training FLOPs = N_train × epochs × (per-step cost averaged over the run's steps).
Densities that change during training (``density_policy != "exact"``: MEST+EM&S, DSR, gradual
pruning) are integrated over the density timeline: rebuilt from the topology records for a finished
run, and from the method's scheduled targets at its closed-form update steps for a prediction.
Inference FLOPs use the final masks. One-shot scoring (SNIP, GraSP) and elementwise work (BiDST's
O(|P|) score update) are not charged.

This module is the cost model beside :class:`~dstbench.core.updater.Needs`; the analysis commands and the
trainer both use it, and it imports nothing from :mod:`dstbench.analysis`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dstbench.core.distributions import SparsityPlan
from dstbench.core.layers import find_prunable_layers
from dstbench.core.structures import parse_structure
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, gradient_density_of, update_steps_of
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.engine.topology import TopologyRecord

__all__ = [
    "LayerFlops",
    "ForwardFlops",
    "count_forward_flops",
    "DensityPhase",
    "density_timeline",
    "initial_active",
    "TrainingSchedule",
    "training_flops",
    "flops_summary",
    "run_flops",
    "forward_report",
    "plan_active",
    "realisable_densities",
    "predict_flops",
]


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one prunable layer for one sample, at full density."""

    name: str
    numel: int
    dense: float


@dataclass(frozen=True)
class ForwardFlops:
    """Per-layer dense forward FLOPs of a model at one input size; densities turn them into f_S."""

    layers: tuple[LayerFlops, ...]

    @property
    def dense(self) -> float:
        """f_D."""
        return sum(layer.dense for layer in self.layers)

    def at(self, densities: Mapping[str, float]) -> float:
        """Forward FLOPs with each layer at its density; layers not listed are dense."""
        return sum(layer.dense * densities.get(layer.name, 1.0) for layer in self.layers)

    def densities(self, active: Mapping[str, int]) -> dict[str, float]:
        """Per-layer densities from active counts."""
        numel = {layer.name: layer.numel for layer in self.layers}
        return {name: count / numel[name] for name, count in active.items()}

    def table(self, densities: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """Per layer: dense FLOPs, density and the FLOPs at that density (the CLI's ``layers``)."""
        rows = {}
        for layer in self.layers:
            density = densities.get(layer.name, 1.0)
            rows[layer.name] = {"dense_flops": layer.dense, "density": density, "sparse_flops": layer.dense * density}
        return rows


@torch.no_grad()
def count_forward_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> ForwardFlops:
    """Forward FLOPs per sample of every conv/linear layer at ``input_size``², read from real shapes.

    Each output element of a conv or linear layer is one dot product over the weight's fan-in
    (``weight[0].numel()``: in/groups·kh·kw, or in_features), so a call costs
    ``2 · output elements · fan-in``. The model runs once in eval mode (BatchNorm statistics are not
    touched) and is put back in its previous mode.
    """
    layers = find_prunable_layers(model)
    flops = {name: 0 for name, _ in layers}

    def hook_for(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            flops[name] += 2 * output[0].numel() * weight[0].numel()

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, in_chans, input_size, input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ForwardFlops(tuple(LayerFlops(name, _numel(module), float(flops[name])) for name, module in layers))


def _numel(module: nn.Module) -> int:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.numel()


@dataclass(frozen=True)
class DensityPhase:
    """From step ``start`` on (until the next phase starts) the layers hold these active counts."""

    start: int
    active: Mapping[str, int]


def density_timeline(initial: Mapping[str, int], records: Sequence[TopologyRecord]) -> list[DensityPhase]:
    """Piecewise-constant active counts: the initial masks, then one phase per topology update.

    A record's ``step`` is the first step trained with its new masks, so the phase starts there.
    """
    phases = [DensityPhase(0, dict(initial))]
    for record in records:
        active = {**phases[-1].active, **{name: change.active for name, change in record.layers.items()}}
        phases.append(DensityPhase(max(record.step, 0), active))
    return phases


def initial_active(layers: Sequence[MaskedLayer], records: Sequence[TopologyRecord]) -> dict[str, int]:
    """Active counts before training, recovered without the initial snapshot.

    The first update recorded every sparsified layer's count after it and what it grew and dropped, so
    its "before" is ``active - grown + dropped``; layers it did not record never changed.
    """
    counts = {layer.name: int(layer.mask.sum()) for layer in layers}
    if records:
        counts.update({name: c.active - c.grown + c.dropped for name, c in records[0].layers.items()})
    return counts


@dataclass(frozen=True)
class TrainingSchedule:
    """The steps of a run, as the accountant sees them."""

    total_steps: int
    samples: int
    """Training samples processed in the whole run: N_train × epochs."""
    update_steps: tuple[int, ...]
    """Steps (0-based) after which the topology changed; an ``update_steps`` method pays f_G there."""


def training_flops(
    forward: ForwardFlops,
    needs: Needs,
    phases: Sequence[DensityPhase],
    schedule: TrainingSchedule,
    gradient_densities: Mapping[str, float] | None,
) -> float:
    """Total training FLOPs: per-step cost (module docstring) summed over steps, × samples per step."""
    starts = [phase.start for phase in phases]
    ends = starts[1:] + [schedule.total_steps]
    f_s = [forward.at(forward.densities(phase.active)) for phase in phases]
    f_g = forward.dense if gradient_densities is None else forward.at(gradient_densities)
    total = 0.0
    for f_phase, start, end in zip(f_s, starts, ends):
        steps = max(0, min(end, schedule.total_steps) - start)
        weight_grad = f_g if needs.dense_grad == "every_step" else f_phase
        total += steps * (2 * f_phase + weight_grad)
    if needs.dense_grad == "update_steps":
        for step in schedule.update_steps:
            total += f_g - f_s[bisect.bisect_right(starts, step) - 1]
    return total * schedule.samples / schedule.total_steps


def gradient_densities(engine: SparseEngine) -> dict[str, float] | None:
    """Where the weight-gradient is needed: the method's own densities, else its backward sets."""
    declared = gradient_density_of(engine.updater, engine.sparse_layers)
    return dict(declared) if declared is not None else engine.backward_densities()


def flops_summary(
    forward: ForwardFlops,
    updater: MaskUpdater,
    gradient_densities: Mapping[str, float] | None,
    phases: Sequence[DensityPhase],
    schedule: TrainingSchedule,
    final_active: Mapping[str, int],
    realisable: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Training and inference FLOPs, and the dense baseline 3·f_D·N·E of the same model;
    ``realisable``: per-layer densities a structured kernel computes (:func:`realisable_densities`)."""
    train = training_flops(forward, updater.needs, phases, schedule, gradient_densities)
    dense_train = 3 * forward.dense * schedule.samples
    return {
        "dense_forward_flops": forward.dense,
        "inference_flops": forward.at(forward.densities(final_active)),
        "realisable_inference_flops": forward.at(realisable or {}),
        "train_flops": train,
        "dense_train_flops": dense_train,
        "train_flops_relative": train / dense_train,
        "train_flops_per_sample": train / schedule.samples,
    }


def _active(layers: Sequence[MaskedLayer]) -> dict[str, int]:
    return {layer.name: int(layer.mask.sum()) for layer in layers}


def run_flops(engine: SparseEngine, input_size: int, train_samples: int, in_chans: int = 3) -> dict[str, Any]:
    """A finished run's own FLOPs, from what really happened in it.

    Density phases come from the engine's topology records, the dense-gradient steps are the steps
    after which it updated, and inference FLOPs use the final masks. ``train_samples`` is N_train (one
    epoch).
    """
    records = engine.records
    schedule = TrainingSchedule(
        total_steps=engine.steps_per_epoch * engine.total_epochs,
        samples=train_samples * engine.total_epochs,
        update_steps=tuple(record.step - 1 for record in records if record.step >= 1),
    )
    phases = density_timeline(initial_active(engine.layers, records), records)
    forward = count_forward_flops(engine.model, input_size, in_chans)
    final = _active(engine.layers)
    realisable = realisable_densities(engine.plan, final)
    return flops_summary(forward, engine.updater, gradient_densities(engine), phases, schedule, final, realisable)


def realisable_densities(plan: SparsityPlan, active: Mapping[str, int]) -> dict[str, float]:
    """Per layer, the fraction of its dense FLOPs a kernel for the plan's structure really computes at
    ``active`` weights (:meth:`Structure.realisable_density`): ``N/M`` under N:M (a 2:4 kernel halves
    the matmul), the kept fraction of blocks or of output channels, and 1 (dense kernels skip nothing)
    unstructured. A channel's removed output also removes the next layer's matching inputs where the
    network is a plain chain; that saving is not counted here (residual adds and concatenations decide
    it per architecture), so channel figures are a lower bound on what a shrunk network skips."""
    rule = parse_structure(plan.structure)
    return {t.name: rule.realisable_density(t.layer.shape, active[t.name]) for t in plan.targets if t.sparsified and t.name in active}


def forward_report(forward: ForwardFlops, active: Mapping[str, int], realisable: Mapping[str, float] | None = None) -> dict[str, Any]:
    """f_D, f_S, the FLOPs a structured kernel computes, and the per-layer table at ``active``."""
    densities = forward.densities(active)
    return {
        "dense_forward_flops": forward.dense,
        "sparse_forward_flops": forward.at(densities),
        "realisable_forward_flops": forward.at(realisable or {}),
        "layers": forward.table(densities),
    }


def plan_active(plan: SparsityPlan) -> dict[str, int]:
    """Target active counts of a plan (every layer, dense ones at their full size)."""
    return {target.name: target.active for target in plan.targets}


def predict_flops(
    forward: ForwardFlops,
    model: nn.Module,
    plan: SparsityPlan,
    updater: MaskUpdater,
    *,
    epochs: int,
    train_samples: int,
    batch_size: int,
    input_size: int,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a run of ``updater`` on ``model`` would cost, before running it (``inputs``: what the
    method declared, e.g. LT's ticket, as :class:`SparseEngine` takes them).

    The engine picks the method's initial masks; the update steps come from the method's schedule in
    closed form (the schedule's ``update_steps``; a plugin with a hand-written ``is_update_step`` is
    asked step by step instead). Methods whose counts follow a schedule are charged their scheduled
    counts from each update on (``scheduled_global`` spreads its total like the plan); other drifting
    policies (``at_least``, ``global``) are only exact from a run's records (:func:`run_flops`).
    Inference FLOPs are those of the final masks, which end at the plan (``at_most``: at the initial
    counts, which already sit below it).
    """
    steps_per_epoch = math.ceil(train_samples / batch_size)
    engine = SparseEngine(model, plan, updater, None, steps_per_epoch=steps_per_epoch, total_epochs=epochs, inputs=inputs)
    engine.loss_fn = nn.functional.cross_entropy
    probe = (torch.randn(2, 3, input_size, input_size), torch.zeros(2, dtype=torch.long))
    engine.initialize(probe if updater.needs.init_batch else None)
    total_steps = steps_per_epoch * epochs
    updates = update_steps_of(updater, total_steps, steps_per_epoch)
    if updates is None:
        updates = [step for step in range(-1, total_steps) if engine.update_due(step)]
    schedule = TrainingSchedule(total_steps, train_samples * epochs, tuple(s for s in updates if s >= 0))
    initial = _active(engine.layers)
    phases = [DensityPhase(0, initial)] + [
        DensityPhase(step + 1, {**initial, **counts}) for step in updates if (counts := _scheduled_counts(engine, step))
    ]
    final = {**initial, **{layer.name: layer.k for layer in engine.sparse_layers}}
    if updater.needs.density_policy == "at_most":  # SRigL ends below k, as it starts: fan-in x neurons
        final = initial
    realisable = realisable_densities(plan, final)
    cost = flops_summary(forward, updater, gradient_densities(engine), phases, schedule, final, realisable)
    return {
        **forward_report(forward, initial, realisable_densities(plan, initial)),
        **cost,
        "steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "mask_updates": len(updates),
        "density_policy": updater.needs.density_policy,
    }


def _scheduled_counts(engine: SparseEngine, step: int) -> dict[str, int]:
    """The counts a scheduled method promises after an update at ``step`` (empty for other policies)."""
    policy = engine.updater.needs.density_policy
    if policy not in ("scheduled", "scheduled_global"):
        return {}
    targets, total = engine.targets(engine.info(step))
    if total is None:
        return targets
    plan_total = sum(layer.k for layer in engine.sparse_layers)
    return {name: round(count * total / plan_total) for name, count in targets.items()}
