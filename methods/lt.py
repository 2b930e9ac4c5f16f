"""LT: Lottery Ticket, iterative magnitude pruning with rewinding.

Frankle & Carbin, ICLR 2019 (rewind to theta_0) and Frankle, Dziugaite, Roy & Carbin, ICML 2020
("Linear mode connectivity and the lottery ticket hypothesis": rewind to theta_k, k early in training);
pruning as in facebookresearch/open_lth (``pruning/sparse_global.py``: one global magnitude threshold
over all prunable weights of the previous round's surviving set). One round::

    input : a finished run R (``--hp ticket_from=R``): the dense run, or the previous round
    mask  : M = the K largest |theta_final(R)| over all sparsified layers together, chosen among R's
            surviving weights (K = this run's total at its ``--sparsity``)
    rewind: every parameter and buffer <- theta_k of the chain's root run (its ``rewind.pt``;
            k = ``rewind_step``, 0 = the initialisation)
    train : with M fixed (a static mask, ``density_policy="global"``: only the total is fixed)

Iterating it with sparsities ``1 - 0.8^r`` is ``dstbench lt`` (:mod:`dstbench.grid.lottery`), which also
charges every round's training in ``summary.json`` (``flops.train_flops``; ``train_flops_run`` is the
round alone).

Departures and choices:

* **Collapse guard**: each layer keeps at least ``min_active`` of its largest surviving weights (the
  run's ``--min-active``, default 1); the global top-k fills the rest, so the total stays exact. The
  report lists the layers the guard clamped. Plain LT has no guard and can empty a layer at extreme
  sparsity.
* **Which layers**: those the run's ``--dense-layers`` profile sparsifies (Frankle & Carbin prune every
  conv and FC layer, ``--dense-layers none``; open_lth's CIFAR ResNets also prune the output layer).
* **Rewinding writes weights**: at initialisation only, this method hands theta_k to the engine
  (:attr:`MaskUpdate.weights`), which loads it before applying the masks (no other method starts from
  other weights); optimizer state starts empty as in the papers.
* **The ticket is an input**: the method declares ``inputs = ("ticket_from",)``; the trainer reads the
  run folder (:mod:`dstbench.runs.tickets`) and hands it over as ``ctx.inputs["ticket_from"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import NonNegativeInt
from dstbench.core.registry import register_method
from dstbench.core.global_select import global_topk
from dstbench.core.inputs import Ticket
from dstbench.core.updater import MaskUpdate, MaskUpdater, Needs, RunView, UpdateContext

__all__ = ["LotteryTicket", "global_magnitude_masks"]


def global_magnitude_masks(
    scores: Mapping[str, torch.Tensor],
    total: int,
    *,
    min_active: int,
    eligible: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The ``total`` best scores over all layers together, at least ``min_active`` per layer: the shared
    :func:`dstbench.core.global_select.global_topk` (each layer first keeps its ``min(min_active, eligible)``
    best entries, then the global ranking of everything else fills the exact total; ties go to the lower
    position). Returns the masks and the layers the guard clamped; a ticket with fewer surviving
    weights than ``total`` is a one-line error.
    """
    available = sum(int(eligible[name].sum()) for name in scores)
    if not 0 <= total <= available:
        raise ConfigError(f"cannot keep {total} weights: the ticket has only {available} left")
    chosen = global_topk(scores, total, min_active=min_active, eligible=eligible)
    return chosen.masks, list(chosen.clamped)


@register_method("lt")
@dataclass
class LotteryTicket(MaskUpdater):
    """A fixed mask: global magnitude top-k of a finished run's final weights, weights rewound."""

    paper = "Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019 (rewinding: Frankle et al., ICML 2020)"

    inputs = ("ticket_from",)

    ticket_from: str = ""
    """Run folder of the dense run or the previous round (finished); required."""
    rewind_step: NonNegativeInt = 0
    """Rewind to the weights after this many steps of the chain's root run (0: the initialisation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.min_active = 1
        self.ticket_report: dict[str, Any] = {}

    @property
    def needs(self) -> Needs:
        # A static mask whose per-layer counts come from the global ranking: only the total is fixed.
        return Needs(density_policy="global")

    def setup(self, run: RunView) -> None:
        # The plan's per-layer floor (``--min-active``) where the plan records it.
        self.min_active = int(getattr(run.plan, "min_active", 1))

    def init_masks(self, ctx: UpdateContext) -> MaskUpdate:
        ticket: Ticket | None = ctx.inputs.get("ticket_from")
        if not self.ticket_from or ticket is None:
            raise ConfigError(
                "lt needs --hp ticket_from=RUN_DIR (a finished dense run or previous round); "
                "`dstbench lt` runs the whole pipeline"
            )
        state, ticket_masks = ticket.final_state()
        scores, eligible = {}, {}
        for layer in ctx.sparse_layers:
            key = f"{layer.name}.weight"
            if key not in state or state[key].shape != layer.weight.shape:
                raise ConfigError(f"ticket_from: {self.ticket_from} has no weight {key} shaped {tuple(layer.weight.shape)}; same --model?")
            scores[layer.name] = state[key].abs()
            eligible[layer.name] = ticket_masks.get(layer.name, torch.ones_like(state[key], dtype=torch.bool))
        total = sum(layer.k for layer in ctx.sparse_layers)
        masks, clamped = global_magnitude_masks(scores, total, min_active=self.min_active, eligible=eligible)
        root = ticket.root()
        self.ticket_report = {
            "ticket_from": self.ticket_from,
            "ticket_root": str(root),
            "rewind_step": self.rewind_step,
            "min_active": self.min_active,
            "clamped_layers": clamped,
            "layer_density": {name: int(mask.sum()) / mask.numel() for name, mask in masks.items()},
        }
        # Rewinding: theta_k of the chain's root run (its ``rewind.pt``), loaded by the engine.
        return MaskUpdate(masks, weights=ticket.rewind_state(self.rewind_step))

    def state_dict(self) -> dict[str, Any]:
        return {"ticket_report": self.ticket_report}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ticket_report = dict(state["ticket_report"])

    def report(self) -> dict[str, Any]:
        return dict(self.ticket_report)
