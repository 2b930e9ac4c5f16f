"""SNFS / sparse momentum: redistribution, momentum growth, exact global budget, schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.selection import apportion
from dstbench.methods.snfs import SNFS
from dstbench.core.registry import create_updater
from dstbench.train.loop import train
from dstbench.core.updater import StepInfo

from .helpers import SmallNet, make_harness, step_engine


def two_layer_engine(layers: list[tuple[list[float], list[float], list[int]]], **hp: float) -> SparseEngine:
    """Two 1x10 linear layers with crafted (weights, momentum, active positions); 10 steps x 100 epochs."""
    model = nn.Sequential(nn.Linear(10, 1, bias=False), nn.Linear(10, 1, bias=False))
    total_active = sum(len(active) for _, _, active in layers)
    plan = plan_sparsity(describe_layers(model), 1 - total_active / 20, "uniform", "none", min_active=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, plan, create_updater("snfs", hp), optimizer, steps_per_epoch=10, total_epochs=100)
    engine.initialize()
    assert sum(layer.k for layer in engine.sparse_layers) == total_active
    for layer, (weights, momentum, active) in zip(engine.sparse_layers, layers):
        mask = torch.zeros(1, 10, dtype=torch.bool)
        mask[0, active] = True
        layer.mask.copy_(mask)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([weights]) * mask)
        optimizer.state[layer.weight]["momentum_buffer"] = torch.tensor([momentum])
    return engine


def end_of_epoch_update(engine: SparseEngine) -> list[list[int]]:
    """Run the step protocol at the end of epoch 0 (no optimizer step) and return the active positions."""
    step_engine(engine, 9)
    return [torch.nonzero(layer.mask[0]).flatten().tolist() for layer in engine.sparse_layers]


# -- apportion ---------------------------------------------------------------------------------------
def test_apportion_known_answers() -> None:
    assert apportion([0.75, 0.25], 4, [7, 7]) == [3, 1]
    assert apportion([0.5, 0.3, 0.2], 10, [100, 100, 100]) == [5, 3, 2]
    assert apportion([1 / 3] * 3, 10, [10, 10, 10]) == [4, 3, 3]  # largest remainder, ties to the lower index
    # Quotas 9.6, 1.6, 0.8: the first is capped at 2 and its excess 7.6 spread evenly (SNFS's
    # ``mean_residual``), giving 2, 5.4, 4.6; largest remainder rounds that to 2, 5, 5.
    assert apportion([0.8, 0.4 / 3, 0.2 / 3], 12, [2, 100, 100]) == [2, 5, 5]
    with pytest.raises(ValueError, match="cannot place"):
        apportion([0.5, 0.5], 5, [2, 2])


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8),
    caps=st.lists(st.integers(0, 50), min_size=8, max_size=8),
    data=st.data(),
)
def test_apportion_is_exact_and_respects_caps(raw: list[float], caps: list[int], data: st.DataObject) -> None:
    caps = caps[: len(raw)]
    total = data.draw(st.integers(0, sum(caps)))
    shares = [r / sum(raw) for r in raw] if sum(raw) > 0 else [1 / len(raw)] * len(raw)
    counts = apportion(shares, total, caps)
    assert sum(counts) == total
    assert all(0 <= c <= cap for c, cap in zip(counts, caps))
    if all(share * total <= cap - 1 for share, cap in zip(shares, caps)):  # no cap binds
        assert all(abs(c - share * total) < 1 + 1e-9 for c, share in zip(counts, shares))


# -- known answers -----------------------------------------------------------------------------------
def test_momentum_redistribution_and_growth_on_crafted_layers() -> None:
    engine = two_layer_engine(
        [
            # Mean |momentum| over the active entries 0..3 is 3 here and 1 below: shares 0.75 / 0.25.
            ([0.4, -0.3, 0.2, 0.1, 0, 0, 0, 0, 0, 0], [5, 5, 1, 1, 0.5, 2.5, 0.1, 1.5, 0.0, 1.2], [0, 1, 2, 3]),
            ([0.1, 0.2, -0.3, 0.4, 0, 0, 0, 0, 0, 0], [0.5, 0.5, 1.5, 1.5, 0.9, 0.0, 0.3, 0.0, 0.2, 0.0], [0, 1, 2, 3]),
        ],
        prune_rate=0.5,
        prune_rate_min=0.5,
    )
    # ceil(0.5 * 4) = 2 smallest |theta| pruned per layer (4 in all), regrown 3 / 1 by largest |momentum|.
    assert end_of_epoch_update(engine) == [[0, 1, 5, 7, 9], [2, 3, 4]]
    first, second = engine.sparse_layers
    assert first.weight.detach()[0].tolist() == pytest.approx([0.4, -0.3, 0, 0, 0, 0, 0, 0, 0, 0])
    assert second.weight.detach()[0].tolist() == pytest.approx([0, 0, -0.3, 0.4, 0, 0, 0, 0, 0, 0])
    assert engine.violations() == []


def test_nearly_dense_growing_layer_prunes_less_and_regrowth_is_capped() -> None:
    engine = two_layer_engine(
        [
            ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0], [3.0] * 9 + [2.0], list(range(9))),
            ([0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1.0, 0, 0, 0.7, 0, 0, 0, 0, 0, 0], [0]),
        ],
        prune_rate=0.5,
        prune_rate_min=0.5,
    )
    # Layer 0 is 90 % dense and its share (0.75) beats 1/2: p = min(0.1, 0.5), so ceil(0.1 * 9) = 1 goes
    # (0.1 at index 8). Layer 1 loses its only weight. Regrowth 1.5 / 0.5, but layer 0 may regrow at most
    # floor(0.99 * 2) = 1: the excess moves to layer 1. Each regrows 1 by momentum: index 8 (3.0 beats
    # index 9's 2.0) and index 0 (1.0 beats index 3's 0.7).
    assert end_of_epoch_update(engine) == [list(range(9)), [0]]
    assert sum(int(layer.mask.sum()) for layer in engine.sparse_layers) == 10


# -- schedule and declared needs ---------------------------------------------------------------------
def test_updates_at_the_end_of_every_epoch_but_the_last() -> None:
    snfs = create_updater("snfs")
    steps = [t for t in range(-1, 50) if snfs.is_update_step(StepInfo(t, steps_per_epoch=10, total_epochs=5))]
    assert steps == [9, 19, 29, 39]


@pytest.mark.parametrize("step", [-1, 9, 499, 989, 999])
def test_prune_rate_decays_per_step_over_the_whole_run(step: int) -> None:
    snfs = SNFS()
    expected = 0.005 + 0.2475 * (1 + math.cos(math.pi * (step + 1) / 1000))
    assert snfs.prune_rate_at(StepInfo(step, 10, 100)) == pytest.approx(expected)


def test_decayed_rate_sets_the_number_pruned() -> None:
    active = list(range(4))
    layer = ([0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0, 0, 0], [1.0] * 4 + [2.0] * 6, active)
    engine = two_layer_engine([layer, layer])
    step_engine(engine, 499)
    # p = 0.2525 at the half-way point: ceil(0.2525 * 4) = 2 pruned per layer (|theta| 0.2, 0.1). Equal
    # shares, so each layer regrows 2: the first two of the tied momenta 2.0 at indices 4..9.
    assert [torch.nonzero(layer.mask[0]).flatten().tolist() for layer in engine.sparse_layers] == [[0, 1, 4, 5]] * 2


def test_needs_dense_gradient_and_momentum_every_step_and_a_global_budget() -> None:
    needs = create_updater("snfs").needs
    assert (needs.dense_grad, needs.masked_optimizer, needs.density_policy) == ("every_step", False, "global")


def test_momentum_stays_dense_between_updates() -> None:
    h = make_harness(create_updater("snfs"), 0.8, steps_per_epoch=4, epochs=2)
    h.step(0)
    off_mask = [h.optimizer.state[layer.weight]["momentum_buffer"][~layer.mask] for layer in h.engine.sparse_layers]
    assert any(bool((m != 0).any()) for m in off_mask)
    assert h.engine.violations() == []  # weights are still exactly zero off the mask


def test_zero_momentum_optimizer_is_a_config_error() -> None:
    model = SmallNet()
    plan = plan_sparsity(describe_layers(model), 0.8, "uniform", "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0)
    with pytest.raises(ConfigError, match="momentum"):
        SparseEngine(model, plan, create_updater("snfs"), optimizer)
    with pytest.raises(ConfigError, match="prune_rate"):
        create_updater("snfs", {"prune_rate": 1.5})


# -- invariants --------------------------------------------------------------------------------------
def test_two_epoch_smoke_run(tmp_path: Path) -> None:
    cfg = resolve_config(
        "quick", overrides={"method": "snfs", "epochs": 2, "out": str(tmp_path / "run"), "synthetic_train_samples": 256}
    )
    summary = train(cfg, progress=False)
    assert summary["topology_updates"] == 1  # the end of epoch 0; never after the last epoch
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=1e-3)
    assert summary["needs"]["masked_optimizer"] is False
