"""Top-KAST: Top-K Always Sparse Training (Jayakumar, Pascanu, Rae, Osindero, Elsen; NeurIPS 2020).

There is no official code; this follows the paper's method section (the two top-k sets and the
exploration regularisation). Per sparsified layer with forward density ``D = k / n``::

    theta: the dense parameters; values outside B wait, unchanged, in a store (the paper's dense theta)
    every delta_t steps (and before training, on the initial dense theta):
        A = top-k(|theta|)                    # forward set, density D
        B = top-k_B(|theta|),  k_B = min(n, round(backward_density_ratio * k))   # B ⊇ A
        entries entering B from the store resume at their stored value; entries leaving B are stored
    every step:
        forward with theta * 1[A];  gradients, weights and optimizer state on B only
        exploration penalty: L2 of strength lambda on A and lambda / D on B \\ A (the run's weight
            decay is lambda: the optimizer already applies it on B, the hook adds (1/D - 1) lambda theta
            on B \\ A), so a weight of B \\ A must earn its way into A against a stronger pull to zero
    cost per sample: 2 f_A + f_B (forward and input-gradient on A, weight-gradient on B)

The engine keeps ``B`` as the method's backward set (``Needs.backward_set``; this method hands it over
in :attr:`MaskUpdate.backward`): between steps the weights hold ``A * theta`` and the values on ``B - A`` wait in ``weight_reserve``; this method holds only the
values outside ``B`` (``state_dict`` carries them, so ``--resume`` is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import torch

from dstbench.core.hparams import PositiveInt, Range
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdate, MaskUpdater, Needs, UpdateContext

__all__ = ["TopKAST", "backward_count"]


def backward_count(layer: MaskedLayer, ratio: float) -> int:
    """|B| of a layer: ``ratio`` times its forward count, at most the whole layer."""
    return min(layer.numel, round(ratio * layer.k))


@register_method("top-kast")
@dataclass
class TopKAST(MaskUpdater):
    paper = "Jayakumar et al., Top-KAST: Top-K Always Sparse Training, NeurIPS 2020"
    cadence_fields = {"delta_t": "steps"}

    backward_density_ratio: Annotated[float, Range(ge=1.0)] = 2.0
    """|B| / |A| per layer. The paper's main ImageNet setting, 90 % forward / 80 % backward sparsity
    in Jayakumar et al. 2020, is 2; 1 turns exploration off (B = A)."""
    delta_t: PositiveInt = 100
    """Steps between refreshes of A and B (the paper recomputes the top-k every step or every N steps
    for large models; 1 is the every-step variant)."""
    exploration_penalty: bool = True
    """Scale the L2 on B \\ A by 1/D (the run's weight decay is the L2 on A); False: plain weight decay."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._stored: dict[str, torch.Tensor] = {}
        """Per layer: theta outside B (zero on B), the values a weight resumes at when it re-enters B."""

    @property
    def needs(self) -> Needs:
        return Needs(
            dense_grad="every_step", backward_set=True, per_step_hook=self.exploration_penalty, capturable_hook=True
        )

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.delta_t)

    # -- the two top-k sets --------------------------------------------------------------------------
    def _select(self, layer: MaskedLayer, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) from the dense theta: one ranking, so the top-k set is a prefix of the top-k_B set."""
        scores = theta.abs()
        forward = topk_mask(scores, layer.k, prefer=layer.mask)
        backward = topk_mask(scores, backward_count(layer, self.backward_density_ratio), prefer=layer.mask)
        return forward, backward | forward

    def init_masks(self, ctx: UpdateContext) -> MaskUpdate:
        # Before training the weights are still dense: A and B are the top-k of the initial theta.
        result = MaskUpdate({}, backward={})
        for layer in ctx.sparse_layers:
            theta = layer.weight.detach()
            self._refresh(result, layer, theta)
        return result

    def update(self, ctx: UpdateContext) -> MaskUpdate:
        result = MaskUpdate({}, backward={})
        for layer in ctx.sparse_layers:
            # The engine has put B - A back: the weight holds theta on B, the store holds the rest.
            theta = torch.where(ctx.backward_mask(layer), layer.weight.detach(), self._stored[layer.name])
            self._refresh(result, layer, theta)
            result.grown[layer.name] = theta  # entries entering B resume at their stored value
        return result

    def _refresh(self, result: MaskUpdate, layer: MaskedLayer, theta: torch.Tensor) -> None:
        """A and B of one layer from its dense theta into ``result``; what falls outside B is stored."""
        forward, backward = self._select(layer, theta)
        result.masks[layer.name] = forward
        assert result.backward is not None
        result.backward[layer.name] = backward
        self._stored[layer.name] = (theta * ~backward).clone()

    # -- exploration penalty -------------------------------------------------------------------------
    def on_step(self, ctx: UpdateContext) -> None:
        """Add ``(1/D - 1) * lambda * theta`` to the gradient on ``B \\ A`` (lambda: the weight decay)."""
        for layer in ctx.sparse_layers:
            grad = layer.weight.grad
            decay = ctx.weight_decay(layer)
            if grad is None or decay == 0.0 or layer.k == 0:
                continue
            outside = ctx.backward_mask(layer) & ~layer.mask
            extra = (layer.numel / layer.k - 1.0) * decay
            grad.add_(layer.weight.detach() * outside, alpha=extra)

    # -- reporting and persistence -------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {"stored_outside_backward": {name: int((t != 0).sum()) for name, t in self._stored.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"stored": {name: t.clone() for name, t in self._stored.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stored = {name: t.clone() for name, t in state["stored"].items()}

