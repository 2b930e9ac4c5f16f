"""What a method sees: its layers, the run it belongs to, the context of one decision, and what it
returns.

A method never holds the engine. It is handed a read-only :class:`RunView` once (``setup``), an
:class:`UpdateContext` at every decision, and answers with masks, or with a :class:`MaskUpdate` when a
decision carries more than masks (values for grown weights, a backward set, weights to start from).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dstbench.core.distributions import LayerTarget, SparsityPlan
from dstbench.core.steps import StepInfo

__all__ = ["MaskedLayer", "UpdateContext", "RunView", "MaskUpdate", "Masks", "Targets", "descend_", "weight_decay_of"]

Masks = dict[str, torch.Tensor]
"""Boolean masks by layer name (layers left out keep their mask)."""


@dataclass
class MaskedLayer:
    """One prunable weight and its mask, as the engine manages them."""

    name: str
    module: nn.Module
    target: LayerTarget

    @property
    def weight(self) -> torch.Tensor:
        weight = self.module.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    def mask(self) -> torch.Tensor:
        """The persistent boolean buffer ``weight_mask`` of the module."""
        mask = self.module.weight_mask
        assert isinstance(mask, torch.Tensor)
        return mask

    @property
    def k(self) -> int:
        """Target number of active weights."""
        return self.target.active

    @property
    def numel(self) -> int:
        return self.target.numel

    @property
    def sparsified(self) -> bool:
        return self.target.sparsified


def weight_decay_of(optimizer: torch.optim.Optimizer | None, weight: torch.Tensor) -> float:
    """The L2 coefficient the optimizer applies to ``weight`` (0 without an optimizer): the one lookup
    Top-KAST's exploration penalty and BiDST's score optimizer read."""
    if optimizer is None:
        return 0.0
    for group in optimizer.param_groups:
        if any(param is weight for param in group["params"]):
            return float(group.get("weight_decay", 0.0))
    return 0.0


@dataclass(frozen=True)
class RunView:
    """The run a method belongs to, read-only: handed to :meth:`MaskUpdater.setup` once, before the
    initial masks, instead of the engine itself."""

    layers: Sequence[MaskedLayer]
    """Every prunable layer, dense-profile ones included, in model order."""
    plan: SparsityPlan
    steps_per_epoch: int
    total_epochs: int
    optimizer_groups: tuple[Mapping[str, Any], ...] = ()
    """The optimizer's hyper-parameters per parameter group (``lr``, ``momentum``, ...), without the
    parameters; empty without an optimizer (``dstbench flops``)."""
    weight_decays: Mapping[str, float] = field(default_factory=dict)
    """Each layer's weight decay by name (0 without an optimizer)."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """What the method declared in ``inputs`` (LT's ticket), loaded by the training side."""
    output_layer: str | None = None
    """The prunable layer the model names as its classifier (timm's ``get_classifier()``), None when
    the model does not say (:func:`dstbench.core.layers.output_layer_name`)."""

    @property
    def sparse_layers(self) -> list[MaskedLayer]:
        """The layers the method decides for."""
        return [layer for layer in self.layers if layer.sparsified]

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    def weight_decay(self, layer: MaskedLayer) -> float:
        return self.weight_decays.get(layer.name, 0.0)


@dataclass
class UpdateContext:
    """What a method may read when it decides: layers, gradients, optimizer state, randomness, LR."""

    info: StepInfo
    layers: list[MaskedLayer]
    rng: torch.Generator
    lr: float | torch.Tensor
    """The optimizer's learning rate: a float, except in a captured per-step hook
    (``Needs.capturable_hook``), where it is the 0-dim tensor the schedule writes into; use it only in
    tensor arithmetic there (:func:`descend_`), never as ``float(ctx.lr)`` or in an ``if``."""
    optimizer: torch.optim.Optimizer | None
    dense_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    model: nn.Module | None = None
    grown_values: dict[str, torch.Tensor] = field(default_factory=dict)
    """Values of grown entries per layer, for methods that fill it instead of returning
    :attr:`MaskUpdate.grown` (the 0.2 way; both work)."""
    backward_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    """The engine's current backward sets ``B`` (empty unless ``needs.backward_set``)."""
    after_optimizer: bool = False
    """In :meth:`MaskUpdater.on_step`: whether the optimizer step of this step has been taken."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """What the method declared in ``inputs`` (LT's ticket), loaded by the training side."""
    output_layer: str | None = None
    """The prunable layer the model names as its classifier (timm's ``get_classifier()``), None when
    the model does not say (:func:`dstbench.core.layers.output_layer_name`)."""
    step_inputs: Mapping[str, torch.Tensor] = field(default_factory=dict)
    """In :meth:`MaskUpdater.on_step`: what :meth:`MaskUpdater.step_inputs` drew for this step on the
    host (Deep-R's noise), so that the hook itself needs no generator and can be captured."""

    @property
    def sparse_layers(self) -> list[MaskedLayer]:
        """The layers the method decides for; dense-profile layers are never handed to it."""
        return [layer for layer in self.layers if layer.sparsified]

    def grad(self, layer: MaskedLayer) -> torch.Tensor:
        """Gradient of the loss w.r.t. the effective weight, dense where the method declared it."""
        stashed = self.dense_grads.get(layer.name)
        if stashed is not None:
            return stashed
        grad = layer.weight.grad
        return torch.zeros_like(layer.weight) if grad is None else grad

    def optimizer_state(self, layer: MaskedLayer) -> dict[str, Any]:
        """The optimizer's state for this weight (e.g. ``momentum_buffer`` for SGD)."""
        if self.optimizer is None:
            return {}
        return dict(self.optimizer.state.get(layer.weight, {}))

    def weight_decay(self, layer: MaskedLayer) -> float:
        """The weight decay the optimizer applies to this layer's weight (0 without one)."""
        return weight_decay_of(self.optimizer, layer.weight)

    def backward_mask(self, layer: MaskedLayer) -> torch.Tensor:
        """The backward set ``B`` of ``layer`` (its forward mask when the method keeps none)."""
        return self.backward_masks.get(layer.name, layer.mask)

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """U[0, 1) noise shaped like ``like``, from this step's seeded generator, on its device."""
        return torch.rand(like.shape, generator=self.rng).to(like.device)


def descend_(target: torch.Tensor, step: torch.Tensor, lr: float | torch.Tensor) -> torch.Tensor:
    """``target -= lr * step`` in place, for a float or a tensor ``ctx.lr``. A float takes PyTorch's
    fused ``sub_(alpha=lr)`` (the eager reference's rounding, which results are pinned to); a tensor
    LR, the captured step's, is multiplied in, so its value is never read on the host."""
    if isinstance(lr, torch.Tensor):
        return target.sub_(step * lr)
    return target.sub_(step, alpha=lr)


@dataclass
class MaskUpdate:
    """A decision that carries more than masks; ``init_masks`` and ``update`` may return one instead of
    a plain dict of masks."""

    masks: Masks
    """New masks for (some of) the sparsified layers; layers left out keep theirs."""
    grown: Masks = field(default_factory=dict)
    """Initial values of grown entries, per layer, shaped like the weight (only entries that become
    active, or enter the backward set, are read). Layers not listed grow at 0 (RigL's convention)."""
    backward: Masks | None = None
    """``needs.backward_set`` (Top-KAST): the backward set ``B`` of each layer, a superset of its new
    mask. Required from ``init_masks`` for every sparsified layer."""
    weights: Mapping[str, torch.Tensor] | None = None
    """``init_masks`` only: weights to start from instead of the model's initialisation, by
    ``state_dict`` key (LT's rewinding to theta_k). The engine loads them, then applies the masks."""


@dataclass(frozen=True)
class Targets:
    """The counts a scheduled method promises after an update (``density_policy="scheduled"``:
    ``layers``; ``"scheduled_global"``: ``total``). They must reach the plan by the end of training."""

    layers: Mapping[str, int] | None = None
    total: int | None = None
