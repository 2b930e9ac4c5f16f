"""Schedules as objects: *when* a topology update happens and *how much* changes.

In the spirit of jaxpruner's ``PeriodicSchedule`` and cstorch's ``update={"freq": .., "stop": ..}``, a
method holds small frozen dataclasses instead of hand-writing ``is_update_step`` and decay formulas.
Every schedule also answers in closed form, so FLOP prediction and ``plan`` outputs never simulate a
run step by step.

The vocabulary (see :class:`dstbench.core.steps.StepInfo`): training has ``T`` steps (optimizer
iterations), numbered ``t = 0 .. T-1``. A topology update is decided after step ``t`` (``t = -1``:
before training) and takes effect at the *boundary* ``b = t + 1``, the number of steps done when the
new mask is first used. Boundaries run from 0 (before training) to ``T`` (after the last step).

When (:class:`Periodic`)::

    steps  : fires at boundary b when c = b - offset >= 0, c % every == 0 and c <= floor(stop * T)
    epochs : fires when b starts epoch e (b = e * steps_per_epoch), e % every == 0, b <= floor(stop * T)
    b == 0 only with at_start; b == T only with at_end

``pause_on_update`` reproduces google-research/rigl, where a mask-update iteration replaces the
optimizer step *without* advancing the global step: the clock ``c`` counts optimizer steps taken, so
``every`` weight updates separate two mask updates instead of ``every - 1``.

How much (:class:`CosineDecay`, :class:`CubicRamp`, :class:`Piecewise`): a pure
function ``at(clock, total)`` of a clock the method chooses and documents (RigL's TF global step,
ITOP's ``t + 1``, MEST's epoch), so the three ways the decays used to be called are now one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from dstbench.core.errors import ConfigError

if TYPE_CHECKING:
    from dstbench.core.steps import StepInfo

__all__ = [
    "Schedule",
    "Periodic",
    "DoublingPeriodic",
    "CosineDecay",
    "CubicRamp",
    "Piecewise",
    "cosine_decay",
    "steps_at",
]

# Fractions of a run such as 0.7 * 10 = 7.000000000000001 must not lose a step to float error.
_EPS = 1e-9


def steps_at(fraction: float, total: int) -> int:
    """``floor(fraction * total)``, robust to binary float error (0.7 * 10 is 7, not 6)."""
    return math.floor(fraction * total + _EPS)


def cosine_decay(initial: float, clock: float, decay_steps: float, final: float = 0.0) -> float:
    """``final + (initial-final)/2 * (1 + cos(pi * clock/decay_steps))``, held at ``final`` after the end."""
    if decay_steps <= 0:
        return final
    progress = min(max(clock / decay_steps, 0.0), 1.0)
    return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * progress))


@runtime_checkable
class Schedule(Protocol):
    """When a method changes its topology: step by step, and for the whole run in closed form.

    A method holds one as its ``schedule`` attribute, built once from its hyper-parameters."""

    def fires(self, info: StepInfo) -> bool: ...

    def update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]: ...


@dataclass(frozen=True)
class Periodic:
    """When a method changes its topology: every ``every`` steps or epochs, within a window."""

    every: int
    """Period, in ``unit``s."""
    unit: Literal["steps", "epochs"] = "steps"
    offset: int = 0
    """Steps unit only: the clock is ``b - offset``. RigL fires after steps 0, ΔT, ... (offset 1)."""
    stop: float = 1.0
    """No update once the clock passes ``floor(stop * T)`` (RigL's ``t_end``, BiDST's end fraction)."""
    at_start: bool = False
    """Allow an update before the first step (MEST updates at the start of epoch 0)."""
    at_end: bool = False
    """Allow an update after the last step (useless for training; kept for RigL's literal rule)."""
    pause_on_update: bool = False
    """Steps unit only: a mask-update iteration does not advance the clock (TF RigL's global step)."""
    stop_exclusive: bool = False
    """The clock must stay *below* ``floor(stop * T)`` (rigl_torch's ``step < T_end``), not reach it."""

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"an update period must be a whole number >= 1, got {self.every!r}")
        if self.unit not in ("steps", "epochs"):
            raise ConfigError(f"a schedule unit must be steps or epochs, got {self.unit!r}")
        if not (math.isfinite(self.stop) and 0.0 <= self.stop <= 1.0):
            raise ConfigError(f"a schedule's stop must be a fraction of training in [0, 1], got {self.stop!r}")
        if self.offset < 0:
            raise ConfigError(f"a schedule's offset must be >= 0, got {self.offset}")

    # -- one step ------------------------------------------------------------------------------------
    def fires(self, info: StepInfo) -> bool:
        """Whether to update after step ``info.step`` (the boundary ``info.step + 1``)."""
        b, total = info.step + 1, info.total_steps
        if not self._edges_allow(b, total):
            return False
        if self.unit == "epochs":
            spe = info.steps_per_epoch
            return b % spe == 0 and (b // spe) % self.every == 0 and b <= self._last(total)
        if self.pause_on_update:
            if info.previous_step_skipped:  # the clock did not move since the last update
                return False
            clock = b - self.offset - info.skipped_steps
        else:
            clock = b - self.offset
        return clock >= 0 and clock % self.every == 0 and clock <= self._last(total)

    def _last(self, total: int) -> int:
        """The last clock value an update may fire at."""
        return steps_at(self.stop, total) - int(self.stop_exclusive)

    def clock(self, info: StepInfo) -> int:
        """The clock at this step: epochs for the epochs unit, else (paused) steps minus ``offset``."""
        if self.unit == "epochs":
            return (info.step + 1) // info.steps_per_epoch
        skipped = info.skipped_steps if self.pause_on_update else 0
        return info.step + 1 - self.offset - skipped

    def _edges_allow(self, b: int, total: int) -> bool:
        return (b > 0 or self.at_start) and (b < total or self.at_end) and 0 <= b <= total

    # -- the whole run, in closed form ---------------------------------------------------------------
    def update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
        """The steps ``t`` (``-1``: before training) after which this schedule updates, in order.

        Closed form: no step-by-step simulation, so predicting a 150-epoch ImageNet run is instant.
        """
        last = self._last(total_steps)
        if self.unit == "epochs":
            period = self.every * steps_per_epoch
            boundaries = range(0, min(last, total_steps) + 1, period)
        elif self.pause_on_update:
            return self._paused_update_steps(last, total_steps)
        else:
            boundaries = range(self.offset, min(total_steps, last + self.offset) + 1, self.every)
        return [b - 1 for b in boundaries if self._edges_allow(b, total_steps)]

    def _paused_update_steps(self, last: int, total_steps: int) -> list[int]:
        """Under ``pause_on_update`` each update during training costs one iteration without moving the
        clock, so the update at clock ``c`` lands at boundary ``c + offset + (such updates before it)``.
        One loop over the updates, not over the steps."""
        steps: list[int] = []
        for clock in range(0, last + 1, self.every):
            boundary = clock + self.offset + sum(step >= 0 for step in steps)
            if boundary > total_steps:
                break
            if self._edges_allow(boundary, total_steps):
                steps.append(boundary - 1)
        return steps


@dataclass(frozen=True)
class CosineDecay:
    """``initial`` cosine-annealed to ``final`` at ``floor(end * total)``, then held (RigL, ITOP, SNFS)."""

    initial: float
    final: float = 0.0
    end: float = 1.0

    def at(self, clock: float, total: float) -> float:
        return cosine_decay(self.initial, clock, steps_at(self.end, int(total)), self.final)


@dataclass(frozen=True)
class CubicRamp:
    """Zhu & Gupta's gradual-pruning ramp (GraNet, GMP): a value moving from ``initial`` to ``final``
    between ``start`` and ``end`` (fractions of ``total``) as ``final + (initial-final)(1-p)^3``."""

    initial: float
    final: float
    start: float = 0.0
    end: float = 1.0

    def at(self, clock: float, total: float) -> float:
        first, last = steps_at(self.start, int(total)), steps_at(self.end, int(total))
        if clock <= first:
            return self.initial
        if clock >= last or last <= first:
            return self.final
        progress = (clock - first) / (last - first)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class Piecewise:
    """Constants per phase: ``values[i]`` from ``boundaries[i-1] * total`` on (MEST's decaying phases)."""

    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            n = len(self.boundaries)
            raise ConfigError(f"{n} phase boundaries need {n + 1} values, got {self.values}")

    def phase(self, clock: float, total: float) -> int:
        """Index of the phase ``clock`` belongs to: how many boundaries it has reached."""
        return sum(clock >= b * total - _EPS for b in self.boundaries)

    def at(self, clock: float, total: float) -> float:
        return self.values[self.phase(clock, total)]


@dataclass(frozen=True)
class DoublingPeriodic:
    """A period in steps that doubles at epoch milestones and stops at an epoch, counted from the last
    update (DSR's ``rp_schedule``: Mostafa & Wang's CIFAR WRN script, ``dst/reparameterization.py``).

    After iteration ``i`` (1-based, ``i = step + 1``) an update fires when ``i - last_update`` equals
    ``P(e)`` of the current iteration's 0-based epoch ``e``: ``P(e) = every * 2^(milestones reached)``,
    none once ``e >= stop``. Milestones and stop are fractions of the epochs (``floor(f * E)``); no
    update after the last step.
    """

    every: int
    doubling_at: tuple[float, ...] = ()
    stop: float = 1.0

    def epochs(self, total_epochs: int) -> tuple[tuple[int, ...], int]:
        """The milestone epochs and the stop epoch of a run of ``total_epochs``."""
        return tuple(steps_at(f, total_epochs) for f in self.doubling_at), steps_at(self.stop, total_epochs)

    def period_at(self, epoch: int, total_epochs: int) -> int | None:
        """The period during the 0-based ``epoch`` (None once updates have stopped)."""
        milestones, stop = self.epochs(total_epochs)
        return None if epoch >= stop else self.every * 2 ** sum(epoch >= m for m in milestones)

    def fires(self, info: StepInfo) -> bool:
        return info.step in self._steps(info.total_steps, info.steps_per_epoch)

    def update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
        return list(self._steps(total_steps, steps_per_epoch))

    def _steps(self, total_steps: int, steps_per_epoch: int) -> tuple[int, ...]:
        milestones, stop = self.epochs(math.ceil(total_steps / steps_per_epoch))
        return doubling_steps(self.every, milestones, stop, total_steps, steps_per_epoch)


@lru_cache(maxsize=32)
def doubling_steps(period: int, milestones: tuple[int, ...], stop: int, total_steps: int, steps_per_epoch: int) -> tuple[int, ...]:
    """The steps ``t`` after which :class:`DoublingPeriodic` fires, in closed form (one loop over the
    updates). ``P`` is constant on runs of whole epochs and never decreases, so the next update after
    iteration ``last`` is the first such segment holding ``last + P_segment``."""
    segments = _constant_period_segments(period, milestones, stop, total_steps, steps_per_epoch)
    steps: list[int] = []
    last = 0
    while True:
        found = None
        for first, final, p in segments:
            if final <= last:
                continue
            if p is None:
                break
            if first <= last + p <= final:
                found = last + p
                break
        if found is None or found >= total_steps:  # no update after the last step
            return tuple(steps)
        steps.append(found - 1)
        last = found


def _constant_period_segments(
    period: int, milestones: tuple[int, ...], stop: int, total_steps: int, steps_per_epoch: int
) -> list[tuple[int, int, int | None]]:
    """Runs of 0-based epochs with one period (None: no update), as ranges of 1-based iterations."""
    epochs = math.ceil(total_steps / steps_per_epoch)
    edges = sorted({m for m in (*milestones, stop) if 0 < m < epochs})
    segments: list[tuple[int, int, int | None]] = []
    start = 0
    for edge in [*edges, epochs]:
        if start < edge:
            here = None if start >= stop else period * 2 ** sum(start >= m for m in milestones)
            segments.append((start * steps_per_epoch + 1, min(edge * steps_per_epoch, total_steps), here))
        start = edge
    return segments
