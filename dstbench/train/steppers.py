"""One training step behind one interface: ``stepper.step(x, y, step, last_micro) -> (loss, logits)``.

A stepper runs one micro-batch: forward, backward and, on the last micro-batch of an optimizer step,
the engine's step and ``zero_grad``. Three implementations compute the same thing (the eager one is
the reference; :mod:`dstbench.train.compiled` holds the other two):

* :class:`EagerStepper`: the model as is (or DDP around it) and ``engine.step``;
* :class:`~dstbench.train.compiled.CompiledStepper` (``--compile``; on CPU, or with
  ``--no-cuda-graph``): ``torch.compile`` of the model and of the engine's captured step;
* :class:`~dstbench.train.compiled.CudaGraphStepper` (``--compile`` on CUDA, where it is the default):
  the whole step captured once in a CUDA graph and replayed.

The loop never asks which one it holds.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dstbench.core.updater import hook_capture_problem
from dstbench.train.compiled import CompiledStepper, CudaGraphStepper
from dstbench.train.epoch import autocast
from dstbench.train.setup import Training

__all__ = ["EagerStepper", "Stepper", "make_stepper"]


class Stepper(Protocol):
    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, last_micro: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one micro-batch; returns its (loss, logits)."""
        ...

    def report(self) -> dict[str, Any] | None:
        """What ``summary.json`` records about how the steps ran (None: nothing to say)."""
        ...


class EagerStepper:
    """The reference step: forward, backward, then ``engine.step`` on the last micro-batch."""

    def __init__(self, t: Training) -> None:
        self.t = t

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, last_micro: bool) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        if t.kernels is not None:  # the backend computes dense weight gradients where the engine reads them
            t.kernels.before_step(t.engine.updater.needs, t.engine.update_due(step))
        with autocast(t.cfg, t.device):
            logits = t.forward_model(x)
            loss = t.criterion(logits.float(), y)
        (loss / t.cfg.grad_accum).backward()
        if last_micro:
            t.engine.step(step, (x, y))
            t.optimizer.zero_grad(set_to_none=True)
        return loss, logits

    def report(self) -> dict[str, Any] | None:
        return None


def make_stepper(t: Training) -> Stepper:
    """The stepper the config asks for. A method whose per-step hook cannot be captured gets no CUDA
    graph (its hook runs eagerly around the compiled model), nor does an optimizer other than SGD (the
    graph captures fused SGD; the other optimizers' steps are not known to be capturable: they run
    compiled only)."""
    if not t.cfg.compile:
        return EagerStepper(t)
    eager_hook = hook_capture_problem(t.engine.updater) is not None
    if t.cfg.cuda_graph and t.device.type in CudaGraphStepper.device_types and not eager_hook and t.cfg.opt == "sgd":
        return CudaGraphStepper(t)
    return CompiledStepper(t)
