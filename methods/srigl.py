"""SRigL: structured RigL with a constant fan-in and neuron ablation (Lasby, Golubeva, Evci, Nica,
Ioannou; "Dynamic Sparse Training with Structured Sparsity", ICLR 2024).

Follows calgaryml/condensed-sparsity ``src/rigl_torch/rigl_constant_fan.py``
(``RigLConstFanScheduler.random_sparsify``, ``_rigl_step``, ``_get_neurons_to_ablate``,
``_get_drop_mask``, ``_get_grow_mask``), ``rigl_utils.get_fan_in_after_ablation`` and the released
``train_rigl.py`` (optimizer step, then ``pruner()``, every iteration), on rigl_torch's schedule
(``RigLScheduler.__call__``, ``cosine_annealing``). Per sparsified layer with ``K`` target weights,
``N`` output neurons (rows of the weight) and dense fan-in ``F``::

    init: every neuron gets fan_in = K // N random inputs            # constant fan-in
    after iteration i (1-based) with i % delta_t == 0 and i < T_end = int(t_end * T), after that
    iteration's optimizer step, with drop fraction f = alpha/2 (1 + cos(pi i / T_end)):
        n = active weights;  n_drop = floor(f * n);  n_keep = n - n_drop
        # neuron ablation (not in the model's classifier: the released configs name it)
        salient   = top-n_keep |theta|  ∪  top-n_drop |dense gradient|   (over the whole layer)
        s_i       = salient weights of neuron i
        threshold = max(1, int(gamma_sal * (K // N)))
        if the (K // F)-th largest s_i is below the threshold: lower the threshold to it
        ablate the neurons with s_i < threshold                        # at most N - ceil(K/F) of them
        fan_in = K // (active neurons)                                 # the ablated fan-in moves here
        # RigL, neuron by neuron
        keep = top-n_keep |theta| on the mask of the active neurons, then at most fan_in per neuron
        grow = per active neuron, top-(fan_in - kept) |dense gradient| off keep
        mask = keep | grow                                             # grown weights start at 0

Every active neuron of a layer has exactly the same fan-in after every update, so a layer holds
``fan_in * active neurons <= K`` weights (``density_policy="at_most"``). The per-neuron fan-in is in
``method_report`` and in ``dstbench inspect``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from dstbench.core.hparams import Fraction
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask, topk_per_row
from dstbench.core.updater import MaskedLayer, Needs, RunView, UpdateContext

from .rigl import RigL

__all__ = ["SRigL", "fan_in_counts", "neurons_to_ablate"]


def fan_in_counts(mask: torch.Tensor) -> torch.Tensor:
    """Active inputs of every output neuron (row) of a weight mask."""
    return mask.reshape(mask.shape[0], -1).sum(dim=1)


def neurons_to_ablate(salient_per_neuron: torch.Tensor, k: int, dense_fan_in: int, gamma_sal: float) -> torch.Tensor:
    """SRigL's ablation rule: neurons with fewer salient weights than the threshold (bool per row).

    The threshold ``max(1, int(gamma_sal * (k // rows)))`` is lowered to the count of the
    ``(k // dense_fan_in)``-th most salient neuron when it would ablate that many, so enough neurons
    stay active to place ``k`` weights without exceeding the dense fan-in. A neuron is never kept when
    more than ``k`` would remain (each active neuron needs at least one weight); the least salient go
    first, and among equals the later neuron.
    """
    rows = salient_per_neuron.numel()
    threshold = max(1, int(gamma_sal * (k // rows)))
    order = sorted(range(rows), key=lambda i: (-int(salient_per_neuron[i]), i))
    min_neurons = k // dense_fan_in
    if min_neurons < rows:
        threshold = min(threshold, int(salient_per_neuron[order[min_neurons]]))
    ablate = salient_per_neuron < threshold
    for i in order[k:]:  # more active neurons than weights: ablate from the least salient
        ablate[i] = True
    return ablate


@register_method("srigl")
@dataclass
class SRigL(RigL):
    paper = "Lasby et al., Dynamic Sparse Training with Structured Sparsity (SRigL), ICLR 2024"

    gamma_sal: Fraction = 0.3
    """Minimum fraction of the constant fan-in that must be salient for a neuron to stay active
    (``min_salient_weights_per_neuron: 0.3`` with ``use_sparse_const_fan_in_for_ablation``)."""
    dynamic_ablation: bool = True
    """Ablate neurons with too few salient weights at every update (False: constant fan-in only)."""
    count_mask_steps: bool = True
    """rigl_torch's step counter advances on every iteration, mask steps included (RigL's field)."""
    skip_weight_update_on_mask_step: bool = False
    """The released ``train_rigl.py`` takes the optimizer step, then calls ``pruner()``, on every
    iteration (``if pruner(): optimizer.step()`` was commented out); true skips it as TF RigL does."""
    rigl_torch_schedule: bool = True
    """rigl_torch's ``RigLScheduler.__call__``: iteration ``i`` (1-based) updates when ``i % delta_t == 0``
    and ``i < T_end = int(t_end * T)``, drop fraction ``alpha/2 (1 + cos(pi i / T_end))``; false: RigL's
    schedule (first update after step 0, ``clock <= T_end``)."""
    ablate_output_layer: bool = False
    """The released configs name the classifier in ``no_ablation_module_names`` (``linear`` ResNet-18,
    ``fc`` ResNet-50, ``head`` ViT), so its neurons are never ablated; true ablates it like every other
    layer, as the code does when the config names nothing (``RigLScheduler`` turns None into [])."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._layers: list[MaskedLayer] = []
        self._output_layer = ""
        self._output_from = ""

    @property
    def needs(self) -> Needs:
        return dataclasses.replace(super().needs, density_policy="at_most")

    @cached_property
    def schedule(self) -> Periodic:
        if not self.rigl_torch_schedule:
            return super().schedule
        return Periodic(self.delta_t, offset=0, stop=self.t_end, stop_exclusive=True)

    def setup(self, run: RunView) -> None:
        self._layers = run.sparse_layers
        self._output_layer, self._output_from = run.output_layer or "", "the model's classifier"
        if run.output_layer is None and run.layers:
            # No classifier named by the model: the last prunable layer, said in the report.
            self._output_layer, self._output_from = run.layers[-1].name, "last prunable layer (the model names no classifier)"

    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        masks = {}
        for layer in ctx.sparse_layers:
            rows = layer.weight.shape[0]
            active = torch.ones(rows, dtype=torch.bool)
            if layer.k < rows:  # fewer weights than neurons: only k neurons can have a fan-in of 1
                active = topk_mask(ctx.uniform(active.float()), layer.k)
            fan_in = layer.k // int(active.sum())
            masks[layer.name] = _rows_topk(ctx.uniform(layer.weight), active, fan_in)
        return masks

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        fraction = self.drop_fraction_at(ctx)
        masks = {}
        for layer in ctx.sparse_layers:
            magnitude = self.drop_scores(ctx, layer)
            gradient = self.grow_scores(ctx, layer)
            mask = layer.mask
            rows = mask.shape[0]
            n_active = int(mask.sum())
            n_drop = self.drop_count(fraction, n_active)
            n_keep = n_active - n_drop
            active = fan_in_counts(mask) > 0
            if self.dynamic_ablation and (self.ablate_output_layer or layer.name != self._output_layer):
                salient = topk_mask(magnitude, n_keep, prefer=mask) | topk_mask(gradient, n_drop, prefer=mask)
                dense_fan_in = mask[0].numel()
                active = ~neurons_to_ablate(fan_in_counts(salient), layer.k, dense_fan_in, self.gamma_sal)
            elif int(active.sum()) == 0:
                active = torch.ones(rows, dtype=torch.bool, device=mask.device)
            active = active.to(mask.device)
            fan_in = layer.k // int(active.sum())
            # Drop: the n_keep largest on the active neurons, then at most fan_in per neuron.
            eligible = mask & _expand(active, mask)
            keep = topk_mask(magnitude, min(n_keep, int(eligible.sum())), eligible=eligible, prefer=mask)
            keep = _rows_topk(magnitude, active, fan_in, eligible=keep, at_most=True)
            # Grow: fill every active neuron to fan_in by gradient.
            grow = _rows_topk(gradient, active, fan_in, eligible=~keep, already=fan_in_counts(keep), prefer=mask)
            masks[layer.name] = keep | grow
        return masks

    def report(self) -> dict[str, Any]:
        output = {"name": self._output_layer, "from": self._output_from, "ablated": self.ablate_output_layer}
        return {"fan_in": {layer.name: fan_in_summary(layer.mask) for layer in self._layers}, "output_layer": output}


def fan_in_summary(mask: torch.Tensor) -> dict[str, int]:
    """Min and max fan-in over the active neurons of a mask, and how many neurons are active/ablated."""
    counts = fan_in_counts(mask)
    active = counts[counts > 0]
    return {
        "min": int(active.min()) if active.numel() else 0,
        "max": int(active.max()) if active.numel() else 0,
        "active_neurons": int(active.numel()),
        "ablated_neurons": int(counts.numel() - active.numel()),
    }


def _expand(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return rows.view(-1, *([1] * (like.dim() - 1))).expand_as(like)


def _rows_topk(
    scores: torch.Tensor,
    rows: torch.Tensor,
    per_row: int,
    *,
    eligible: torch.Tensor | None = None,
    already: torch.Tensor | None = None,
    prefer: torch.Tensor | None = None,
    at_most: bool = False,
) -> torch.Tensor:
    """Per output neuron: ``per_row - already[i]`` best eligible entries of every selected row
    (``at_most``: up to ``per_row`` of its eligible ones), through the shared per-row top-k kernel."""
    counts = torch.where(rows.to(scores.device), per_row, 0)
    if already is not None:
        counts = counts - already.to(scores.device) * rows.to(scores.device)
    if at_most and eligible is not None:
        counts = torch.minimum(counts, fan_in_counts(eligible).to(scores.device))
    return topk_per_row(scores, counts, eligible=eligible, prefer=prefer)
