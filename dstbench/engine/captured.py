"""The engine's step as fixed-shape tensor work, for the fast steppers to compile or capture.

A step on which the method decides nothing (no topology update due) is, for every method whose
per-step hook keeps to the captured-step rules (``Needs.capturable_hook``), the same tensor work each
time: put the backward set's values back, the method's ``on_step``, mask the gradients, the optimizer
step, zero off the backward set, ``on_step`` again where it runs after the optimizer, set ``B - M``
aside. :class:`CapturedStep` is that work with one context per hook position built **once**: its LR is
the optimizer's tensor (written in place by the schedule), its ``step_inputs`` are fixed buffers
refilled on the host before each step (:meth:`CapturedStep.stage`). Nothing in it reads a tensor on
the host, branches on a value or allocates a shape that depends on data, so ``torch.compile`` traces
it once and a CUDA graph replays it; a topology update writes into the same tensors.

It computes what ``SparseEngine.step`` computes on such a step, in the same order (the eager engine
stays the reference; ``tests/test_compiled.py`` compares the two for every built-in method).
"""

from __future__ import annotations

import torch

from dstbench.core.context import UpdateContext
from dstbench.core.errors import ConfigError
from dstbench.core.updater import hook_capture_problem
from dstbench.engine.sparse_engine import SparseEngine

__all__ = ["CapturedStep"]

class CapturedStep:
    """One engine's capturable step: :meth:`run` is the tensor work, :meth:`stage` its host-side inputs."""

    def __init__(self, engine: SparseEngine) -> None:
        self.engine = engine
        needs = engine.updater.needs
        hooks = hook_capture_problem(engine.updater) is None and needs.per_step_hook
        self._staged: dict[bool, dict[str, torch.Tensor]] = {}
        self.contexts: dict[bool, UpdateContext] = {}
        for after in (False, True):
            if hooks and needs.hook_runs(after_optimizer=after):
                self._staged[after] = {}
                self.contexts[after] = self._context(after)

    def _context(self, after_optimizer: bool) -> UpdateContext:
        """The hook's context for every captured step: no batch, no generator of its own (its draws
        come through ``step_inputs``), the LR as the optimizer's tensor, no stashed gradients (none
        are stashed off an update step, and the engine replaces, never fills, its stash)."""
        engine = self.engine
        return engine.context(
            -1,
            "captured",
            lr=_tensor_lr(engine.optimizer),
            after_optimizer=after_optimizer,
            step_inputs=self._staged[after_optimizer],
        )

    def stage(self, step: int) -> None:
        """Host side, before the step runs: the method's ``step_inputs`` for ``step`` (drawn from the
        same seeded generators the eager engine hands it), copied into the fixed buffers."""
        engine = self.engine
        for after, buffers in self._staged.items():
            stream = "after_step" if after else "step"
            drawn = engine.updater.step_inputs(engine.context(step, stream, lr=_tensor_lr(engine.optimizer)))
            if not buffers:
                buffers.update({name: value.clone() for name, value in drawn.items()})
                continue
            if drawn.keys() != buffers.keys() or any(drawn[n].shape != buffers[n].shape for n in drawn):
                raise ConfigError(f"{engine.updater.name}: step_inputs must return the same names and shapes every step")
            for name, value in drawn.items():
                buffers[name].copy_(value)

    @torch.no_grad()
    def run(self) -> None:
        """The step's tensor work, in ``SparseEngine.step``'s order."""
        engine = self.engine
        engine.backward.restore()
        if False in self.contexts:
            engine.updater.on_step(self.contexts[False])
        engine.mask_gradients()
        if engine.optimizer is not None:
            engine.optimizer.step()
        engine.zero_off_backward()
        if True in self.contexts:
            engine.updater.on_step(self.contexts[True])
        engine.backward.set_aside()


def _tensor_lr(optimizer: torch.optim.Optimizer | None) -> float | torch.Tensor:
    """The first group's LR as the optimizer holds it: the fast steppers make it a tensor."""
    if optimizer is None:
        return 0.0
    lr = optimizer.param_groups[0]["lr"]
    return lr if isinstance(lr, torch.Tensor) else float(lr)
