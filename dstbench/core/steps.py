"""Where training is, in the one vocabulary every schedule and method uses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepInfo"]


@dataclass(frozen=True)
class StepInfo:
    """Where training is, from the point of view of the step that just finished.

    ``step`` is the 0-based index of the step just taken, or ``-1`` before the first step; an update
    decided at ``step`` takes effect from step ``step + 1`` on (the *boundary*, see
    :mod:`dstbench.core.schedules`). ``skipped_steps`` counts the steps before this one whose optimizer step
    a method skipped (TF RigL's mask steps) and ``previous_step_skipped`` says whether the last one was,
    so a schedule can count optimizer steps the way google-research/rigl's global step does.
    """

    step: int
    steps_per_epoch: int
    total_epochs: int
    skipped_steps: int = 0
    previous_step_skipped: bool = False

    @property
    def boundary(self) -> int:
        """Steps done when a mask decided now is first used: ``step + 1``."""
        return self.step + 1

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    @property
    def epoch(self) -> int:
        """Epoch of the step just taken (0 before training)."""
        return max(self.step, 0) // self.steps_per_epoch

    @property
    def next_epoch(self) -> int:
        """Epoch of the next step: the first epoch that trains with a mask changed now."""
        return (self.step + 1) // self.steps_per_epoch
