"""The divergence guard: a non-finite loss stops the run with one line naming its step."""

from __future__ import annotations

import math

import torch

from dstbench.core.errors import TrainingDiverged
from dstbench.runs.rundir import RunDir

__all__ = ["DIVERGENCE_CHECK_EVERY", "DivergenceGuard"]

DIVERGENCE_CHECK_EVERY = 50
"""On CUDA, steps between two reads of the divergence record (a host sync each): at most this many
steps are wasted after a divergence, and the step the report names is exact regardless."""


class DivergenceGuard:
    """Stops training at the first non-finite loss, naming its step and the last finite loss before it.

    The record (first bad step, its loss, the last finite loss) is kept on the device and read only
    every ``every`` steps and at the end of each epoch, before the checkpoint: reading a CUDA tensor
    waits for the GPU, and doing that every step would stall the asynchronous (CUDA-graph) step. On
    the CPU reading is free and ``every`` is 1. Either way the report names the exact step.
    """

    def __init__(self, run: RunDir, device: torch.device, every: int = 1) -> None:
        self.run = run
        self.every = every
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.last_finite = torch.full((), math.nan, dtype=torch.float64, device=device)

    @classmethod
    def for_device(cls, run: RunDir, device: torch.device) -> DivergenceGuard:
        """Read every step on the CPU (free), every :data:`DIVERGENCE_CHECK_EVERY` steps on CUDA."""
        return cls(run, device, DIVERGENCE_CHECK_EVERY if device.type == "cuda" else 1)

    def record(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = loss.detach().double()
        finite = torch.isfinite(value)
        fresh = ~finite & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, step, self.first_bad)
        self.bad_loss = torch.where(fresh, value, self.bad_loss)
        self.last_finite = torch.where(finite & (self.first_bad < 0), value, self.last_finite)
        if (step + 1) % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        step = int(self.first_bad)
        if step < 0:
            return
        last = float(self.last_finite)
        last_text = "none yet" if math.isnan(last) else f"{last:.6g}"
        kept = (
            f"the checkpoint of epoch {epoch} in {self.run.path} is intact"
            if epoch > 0
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged: loss is {float(self.bad_loss)} at epoch {epoch + 1}, step {step} "
            f"(last finite loss {last_text}); {kept}; train again with a lower --lr into a new --out (--resume continues "
            "only the same config, so it cannot change the lr)"
        )
