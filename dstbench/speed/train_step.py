"""One training step per backend that trains, for ``dstbench speed``: forward, backward and the optimizer.

The run's final model in train mode (BatchNorm updates its statistics, as in training), random labels,
SGD with momentum at learning rate 0 (the step's work is the same, and the weights stay the run's
across the timed repetitions). Backends train through :func:`dstbench.speed.training.attach`, on a
plain step: weight gradients at the mask's entries only (a mask-update step of RigL adds one dense
weight gradient, and a re-compression, which ``rebuild_seconds_per_update`` times). The engine's
masking of gradients and weights, the same for every backend, is not part of the step timed here.

Before any time counts, each backend's loss and weight gradients (on the mask) are compared with
``masked``'s on the same batch; the relative errors go to ``speed.json`` beside the forward proof.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dstbench.core.needs import Needs
from dstbench.speed.backends import BackendMismatch, masked_layers
from dstbench.speed.training import attach

__all__ = ["training_steps"]

_TOLERANCE = 1e-4
"""Relative error accepted on the loss and the weight gradients (sums of a whole batch in another order)."""


def _trainer(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable[[], Any], nn.Module]:
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        for _, module in masked_layers(net):
            getattr(module, "weight").mul_(getattr(module, "weight_mask"))
    kernels = attach(net, name, x.device)
    if kernels is not None:
        kernels.before_step(Needs(), update_due=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)

    def step() -> torch.Tensor:
        with torch.enable_grad():  # the timer runs under no_grad
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
        return loss.detach()

    return step, net


def _gradients(net: nn.Module) -> torch.Tensor:
    parts = []
    for _, module in masked_layers(net):
        grad = getattr(module, "weight").grad
        parts.append((grad * getattr(module, "weight_mask")).reshape(-1))
    return torch.cat(parts)


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).abs().max()) / (float(reference.abs().max()) or 1.0)


def training_steps(model: nn.Module, backends: Sequence[str], x: torch.Tensor, records: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """A timed-step closure per backend (``masked`` first), each proved against ``masked`` on one step;
    a backend beyond tolerance is recorded as a mismatch in ``records`` and left out."""
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(0)).to(x.device)
    steps: dict[str, Callable[[], Any]] = {}
    reference: tuple[torch.Tensor, torch.Tensor] | None = None
    for name in ["masked", *[b for b in backends if b != "masked"]]:
        step, net = _trainer(model, name, x, y)
        loss, grads = step(), _gradients(net)
        if reference is None:
            reference = (loss, grads)
        proof = {"loss_rel_error": _relative(loss, reference[0]), "weight_grad_rel_error": _relative(grads, reference[1]), "tolerance": _TOLERANCE}
        records[name]["training_proof"] = proof
        if max(proof["loss_rel_error"], proof["weight_grad_rel_error"]) > _TOLERANCE:
            records[name]["training_status"] = str(BackendMismatch(f"backend {name}'s training step differs from masked's beyond {_TOLERANCE:g}"))
            continue
        steps[name] = step
    return steps
