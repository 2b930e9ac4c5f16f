"""Schedule objects: closed forms agree with step-by-step firing; amounts hit their known values; TF
RigL's step counter gives delta_t weight updates between mask updates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.core.schedules import CosineDecay, CubicRamp, Periodic, Piecewise
from dstbench.core.updater import StepInfo


def simulate(schedule: Periodic, steps_per_epoch: int, epochs: int, *, skip_on_update: bool) -> list[int]:
    """The steps after which ``schedule`` fires, asked one step at a time, with the engine's counters."""
    fired, skipped, previous = [], 0, False
    for step in range(-1, steps_per_epoch * epochs):
        info = StepInfo(step, steps_per_epoch, epochs, skipped_steps=skipped, previous_step_skipped=previous)
        fires = schedule.fires(info)
        if fires:
            fired.append(step)
        if step >= 0:
            previous = fires and skip_on_update
            skipped += int(previous)
    return fired


@settings(max_examples=300, deadline=None)
@given(
    every=st.integers(1, 12),
    unit=st.sampled_from(["steps", "epochs"]),
    offset=st.integers(0, 3),
    stop=st.sampled_from([0.0, 0.1, 0.5, 0.75, 0.8, 1.0]),
    at_start=st.booleans(),
    at_end=st.booleans(),
    pause=st.booleans(),
    exclusive=st.booleans(),
    steps_per_epoch=st.integers(1, 9),
    epochs=st.integers(1, 8),
)
def test_closed_form_update_steps_equal_step_by_step_firing(
    every: int, unit: str, offset: int, stop: float, at_start: bool, at_end: bool, pause: bool, exclusive: bool,
    steps_per_epoch: int, epochs: int,
) -> None:
    schedule = Periodic(every, unit=unit, offset=offset if unit == "steps" else 0, stop=stop,  # type: ignore[arg-type]
                        at_start=at_start, at_end=at_end, pause_on_update=pause and unit == "steps",
                        stop_exclusive=exclusive)
    expected = simulate(schedule, steps_per_epoch, epochs, skip_on_update=schedule.pause_on_update)
    assert schedule.update_steps(steps_per_epoch * epochs, steps_per_epoch) == expected


def test_known_firing_steps() -> None:
    # RigL: after steps 0, 100, ..., up to 75 % of 1000 steps; TF's paused clock shifts each by one more.
    assert Periodic(100, offset=1, stop=0.75).update_steps(1000, 10) == list(range(0, 751, 100))
    assert Periodic(100, offset=1, stop=0.75, pause_on_update=True).update_steps(1000, 10) == [
        0, 101, 202, 303, 404, 505, 606, 707]
    # MEST: the start of every 5th epoch, epoch 0 included; SET: the end of every epoch but the last.
    assert Periodic(5, unit="epochs", at_start=True).update_steps(20 * 4, 4) == [-1, 19, 39, 59]
    assert Periodic(1, unit="epochs").update_steps(3 * 4, 4) == [3, 7]
    # rigl_torch (SRigL): after iterations 100, 200, ... while the iteration is below T_end = 750.
    assert Periodic(100, stop=0.75, stop_exclusive=True).update_steps(1000, 10) == list(range(99, 700, 100))
    assert Periodic(100, stop=0.75).update_steps(1000, 10) == list(range(99, 750, 100))


def test_bad_schedules_are_config_errors() -> None:
    for kwargs in ({"every": 0}, {"every": 5, "stop": 1.5}, {"every": 5, "stop": math.nan}, {"every": 2, "offset": -1}):
        with pytest.raises(ConfigError):
            Periodic(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="2 phase boundaries need 3 values"):
        Piecewise((0.5, 0.75), (0.2, 0.1))


def test_amount_schedules_known_values() -> None:
    cosine = CosineDecay(0.3, 0.0, end=0.75)  # RigL: 0.3 -> 0 at step 750 of 1000
    assert cosine.at(0, 1000) == pytest.approx(0.3)
    assert cosine.at(375, 1000) == pytest.approx(0.15)
    assert cosine.at(750, 1000) == pytest.approx(0.0) and cosine.at(900, 1000) == 0.0
    assert CosineDecay(0.5, 0.005).at(1000, 1000) == pytest.approx(0.005)  # ITOP/SNFS floor
    # Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - p)^3, from step 100 to 500 of 1000.
    ramp = CubicRamp(0.5, 0.9, start=0.1, end=0.5)
    assert ramp.at(0, 1000) == 0.5 and ramp.at(100, 1000) == 0.5
    assert ramp.at(300, 1000) == pytest.approx(0.9 + (0.5 - 0.9) * 0.5**3)
    assert ramp.at(500, 1000) == 0.9 and ramp.at(999, 1000) == 0.9
    phases = Piecewise((90 / 160, 120 / 160), (0.2, 0.1, 0.0))  # MEST's phases by epoch
    assert [phases.at(e, 160) for e in (0, 89, 90, 119, 120, 159)] == [0.2, 0.2, 0.1, 0.1, 0.0, 0.0]


class _TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.b = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _weight_updates_between_mask_updates(count_mask_steps: bool) -> tuple[list[int], int]:
    torch.manual_seed(0)
    model = _TwoLayer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = create_updater("rigl", {"delta_t": "5", "t_end": "1.0", "count_mask_steps": str(count_mask_steps)})
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none")
    engine = SparseEngine(model, plan, updater, optimizer, steps_per_epoch=10, total_epochs=3)
    engine.initialize()
    taken, gaps = 0, []
    for step in range(30):
        model(torch.randn(4, 6)).sum().backward()
        updates_before = len(engine.records)
        taken_before = engine.skipped_steps
        engine.step(step)
        taken += 1 - (engine.skipped_steps - taken_before)
        optimizer.zero_grad()
        if len(engine.records) > updates_before:
            gaps.append(taken)
            taken = 0
    return gaps, engine.skipped_steps


def test_rigl_trains_delta_t_weight_updates_between_mask_updates_as_tf() -> None:
    """google-research/rigl: the mask step replaces the optimizer step and leaves the global step alone,
    so exactly delta_t optimizer steps separate two mask updates."""
    gaps, skipped = _weight_updates_between_mask_updates(count_mask_steps=False)
    assert gaps == [0, 5, 5, 5, 5] and skipped == 5  # updates after steps 0, 6, 12, 18, 24
    legacy, _ = _weight_updates_between_mask_updates(count_mask_steps=True)
    assert legacy[1:] == [4] * (len(legacy) - 1)
