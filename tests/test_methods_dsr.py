"""DSR: adaptive global threshold, reallocation by surviving share, the doubling period."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.methods.dsr import DSR, adapt_threshold
from dstbench.core.registry import create_updater
from dstbench.train.loop import train
from dstbench.core.updater import StepInfo

from .helpers import SmallNet, make_harness, step_engine
from .methods_helpers import active_positions, crafted_engine, quick_config


# -- threshold adaptation -----------------------------------------------------------------------------
def test_threshold_follows_the_known_sequence() -> None:
    # N_p = 100, delta = 0.1: K < 90 doubles H, K > 110 halves it, 90..110 keeps it.
    pruned = [0, 50, 89, 90, 110, 111, 400, 100]
    expected = [2e-3, 4e-3, 8e-3, 8e-3, 8e-3, 4e-3, 2e-3, 2e-3]
    threshold, seen = 1e-3, []
    for k in pruned:
        threshold = adapt_threshold(threshold, k, 100.0, 0.1, 2.0)
        seen.append(threshold)
    assert seen == pytest.approx(expected, rel=0, abs=1e-15)


# -- the reparameterisation schedule ------------------------------------------------------------------
def official_handler(period: int, epochs: int, spe: int, milestones: tuple[int, ...], stop: int) -> list[int]:
    """The CIFAR script's ignite handler, step by step: count iterations since the last
    reparameterisation and fire when the count equals rp_schedule(epoch) (0-based epochs here)."""
    since, fired = 0, []
    for iteration in range(1, epochs * spe + 1):
        epoch = (iteration - 1) // spe
        current = math.inf if epoch >= stop else period * 2 ** sum(epoch >= m for m in milestones)
        since += 1
        if since == current:
            fired.append(iteration - 1)
            since = 0
    return [t for t in fired if t < epochs * spe - 1]  # never after the last step


def test_period_doubles_on_a_hand_computed_run() -> None:
    # 10 epochs of 3 steps, period 2: P = 2 in epochs 0-1, 4 in 2-3, 8 in 4-5, 16 in 6-7, none from 8.
    # Iterations 2, 4, 6 (P=2), 10 (P=4: 6+4), 18 (P=8: 10+4=14 is in epoch 4 where P is 8), then 18+16 > 24.
    dsr = DSR(period=2)
    assert dsr.schedule.update_steps(30, 3) == [1, 3, 5, 9, 17]
    assert [t for t in range(-1, 30) if dsr.is_update_step(StepInfo(t, 3, 10))] == [1, 3, 5, 9, 17]
    assert [dsr.period_at(e, 10) for e in range(10)] == [2, 2, 4, 4, 8, 8, 16, 16, None, None]


@pytest.mark.parametrize(("period", "epochs", "spe"), [(100, 200, 13), (3, 20, 7), (5, 10, 1), (7, 6, 32), (1, 5, 4)])
def test_closed_form_schedule_matches_the_official_counter(period: int, epochs: int, spe: int) -> None:
    dsr = DSR(period=period)
    milestones = tuple(math.floor(f * epochs + 1e-9) for f in (0.2, 0.4, 0.6))
    stop = math.floor(0.8 * epochs + 1e-9)
    assert dsr.schedule.update_steps(epochs * spe, spe) == official_handler(period, epochs, spe, milestones, stop)


def test_paper_schedule_on_cifar_wrn() -> None:
    # 200 epochs of 391 steps: P = 100, 200, 400, 800 from epochs 0, 40, 80, 120; nothing from 160.
    steps = DSR().schedule.update_steps(200 * 391, 391)
    assert steps[:3] == [99, 199, 299]
    gaps = {steps[i + 1] - steps[i] for i in range(len(steps) - 1)}
    assert gaps == {100, 200, 400, 800}
    assert steps[-1] < 160 * 391
    assert max(t for t in steps if t < 40 * 391) == 155 * 100 + 99  # the last update at P = 100


# -- known answers on crafted layers ------------------------------------------------------------------
def crafted(**hp: object) -> object:
    return crafted_engine(
        "dsr",
        [
            ([0.5, -0.4, 0.0005, 0.3, -0.0002, 0.2, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5]),
            ([0.1, 0.0001, -0.2, 0.3, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3]),
        ],
        {"period": 1, "target_fraction_to_prune": 0.1, **hp},
    )


def test_threshold_prune_regrowth_split_and_threshold_update() -> None:
    engine = crafted()
    step_engine(engine, 0)
    first, second = active_positions(engine)
    # |theta| < 1e-3: indices 2, 4 of layer 0 and 1 of layer 1, K = 3. Survivors R = (4, 3) regrow
    # 3 * 4/7 = 1.71 and 3 * 3/7 = 1.29: floors (1, 1), the spare unit to the larger remainder (layer 0).
    assert {0, 1, 3, 5} <= set(first) and len(first) == 6
    assert {0, 2, 3} <= set(second) and len(second) == 4
    # K = 3 > (1 + 0.1) * N_p with N_p = 0.1 * 20 parameters = 2: H halves.
    assert engine.updater.threshold == pytest.approx(5e-4)
    for layer, survivors, values in zip(engine.sparse_layers, ({0, 1, 3, 5}, {0, 2, 3}), ([0.5, -0.4, 0, 0.3, 0, 0.2], [0.1, 0, -0.2, 0.3])):
        weight = layer.weight.detach()[0]
        for i in survivors:
            assert float(weight[i]) == pytest.approx(values[i])
        # New positions (never active before) start at zero.
        for i in set(torch.nonzero(layer.mask[0]).flatten().tolist()) - survivors - {2, 4, 1}:
            assert float(weight[i]) == 0.0
    assert engine.violations() == []


def test_too_few_below_threshold_doubles_it() -> None:
    engine = crafted(target_fraction_to_prune=0.5)  # N_p = 10, K = 3 < 9
    step_engine(engine, 0)
    assert engine.updater.threshold == pytest.approx(2e-3)
    assert engine.updater.report()["mean_pruned_per_reparameterization"] == 3


@pytest.mark.parametrize(("guard", "expected_second"), [(1, 1), (0, 0)])
def test_collapse_guard_keeps_the_largest_weight(guard: int, expected_second: int) -> None:
    engine = crafted_engine(
        "dsr",
        [
            ([0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.7, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6]),
            ([0.0001, -0.0003, 0.0002, 0, 0, 0, 0, 0, 0, 0], [0, 1, 2]),
        ],
        {"period": 1, "min_layer_active": guard},
    )
    step_engine(engine, 0)
    first, second = active_positions(engine)
    if guard:
        # Layer 1 keeps index 1 (|-0.0003|); 2 freed weights split 7:1 (1.75, 0.25) -> (2, 0).
        assert second == [1]
    else:
        # Layer 1 empties (R = 0): all 3 freed weights go to layer 0, which is then full.
        assert first == list(range(10))
    assert len(second) == expected_second
    assert len(first) + len(second) == 10
    assert engine.updater.report()["layers_kept_by_collapse_guard"] == guard


# -- invariants, needs, smoke and resume --------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(
    sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.99, 0.999999]),
    distribution=st.sampled_from(["uniform", "erk"]),
    fraction=st.sampled_from([0.01, 0.1, 0.5]),
)
def test_global_total_is_exact_after_every_step(sparsity: float, distribution: str, fraction: float) -> None:
    h = make_harness(create_updater("dsr", {"period": 1, "target_fraction_to_prune": fraction, "stop_at": 1.0, "doubling_at": ()}),
                     sparsity, distribution, model=SmallNet(), steps_per_epoch=3, epochs=4)  # fmt: skip
    budget = sum(layer.k for layer in h.engine.sparse_layers)
    for step in range(12):
        h.step(step)
        assert h.engine.violations() == []
        assert sum(int(layer.mask.sum()) for layer in h.engine.sparse_layers) == budget
    assert len(h.engine.records) == 11


def test_needs_no_dense_gradient_and_a_global_budget() -> None:
    needs = create_updater("dsr").needs
    assert (needs.dense_grad, needs.density_policy, needs.per_step_hook) == ("never", "global", False)


def test_one_epoch_quick_smoke_run(tmp_path: Path) -> None:
    # One epoch: scale the schedule into it (no doubling, no stop) so DSR reparameterises.
    summary = train(quick_config("dsr", tmp_path / "run", hp={"period": 2, "doubling_at": (), "stop_at": 1.0}), progress=False)
    assert summary["topology_updates"] == 1  # steps 1 and 3 of 4 (256 samples / 64), not after the last
    assert summary["method_report"]["reparameterizations"] == 1
    assert summary["needs"]["density_policy"] == "global"
