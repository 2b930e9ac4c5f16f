"""MEST+EM and MEST+EM&S: script bounds, schedule, phases, exact counts, soft-bound density."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.methods.mest import MEST, MESTSoftBound
from dstbench.core.registry import create_updater
from dstbench.train.loop import train
from dstbench.core.updater import MaskedLayer, MaskUpdater, StepInfo

from .helpers import make_harness, step_engine


def linear_engine(
    updater: MaskUpdater, n: int, sparsity: float, *, steps_per_epoch: int = 2, epochs: int = 160
) -> SparseEngine:
    """One 1 x n linear layer under ``updater`` (uniform sparsity); not initialised yet."""
    model = nn.Linear(n, 1, bias=False)
    plan = plan_sparsity(describe_layers(model), sparsity, "uniform", "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return SparseEngine(model, plan, updater, optimizer, steps_per_epoch=steps_per_epoch, total_epochs=epochs)


def set_layer(engine: SparseEngine, weights: list[float], active: list[int]) -> None:
    (layer,) = engine.sparse_layers
    mask = torch.zeros_like(layer.mask)
    mask[0, active] = True
    layer.mask.copy_(mask)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]) * mask)


def update_now(engine: SparseEngine, step: int) -> None:
    """Run the engine's step protocol at ``step`` without changing the weights (no optimizer step)."""
    assert engine.updater.is_update_step(engine.info(step))
    step_engine(engine, step)


# -- schedule ----------------------------------------------------------------------------------------
def test_32_updates_in_160_epochs_at_the_start_of_every_fifth_epoch() -> None:
    mest = create_updater("mest")
    steps = [t for t in range(-1, 320) if mest.is_update_step(StepInfo(t, steps_per_epoch=2, total_epochs=160))]
    assert len(steps) == 32
    assert steps[:3] == [-1, 9, 19]  # before training (epoch 0), then the last step of epochs 4 and 9
    assert [StepInfo(t, 2, 160).next_epoch for t in steps] == list(range(0, 160, 5))


def test_phases_switch_at_epochs_90_and_120_of_160_and_scale_with_the_run() -> None:
    phase = MEST().phase
    at = {e: phase(StepInfo(e * 2 - 1, 2, 160)) for e in (0, 85, 89, 90, 115, 119, 120, 155)}
    assert at == {0: 0, 85: 0, 89: 0, 90: 1, 115: 1, 119: 1, 120: 2, 155: 2}
    # 16 epochs: boundaries at 9 and 12.
    assert [phase(StepInfo(e * 4 - 1, 4, 16)) for e in range(16)] == [0] * 9 + [1] * 3 + [2] * 4
    custom = MEST(phase_boundaries=(0.5,), prune_extra=(0.3, 0.0), grow_extra=(0.0, 0.0))
    assert [custom.phase(StepInfo(e * 4 - 1, 4, 10)) for e in range(10)] == [0] * 5 + [1] * 5


# -- the scripts' bounds -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "sparsity", "prune_to", "grow_to"),
    [
        ("mest", 0.9, (0.92, 0.91, 0.90), (0.90, 0.90, 0.90)),
        ("mest", 0.95, (0.96, 0.955, 0.95), (0.95, 0.95, 0.95)),
        ("mest-ems", 0.9, (0.90, 0.90, 0.90), (0.85, 0.875, 0.90)),
        ("mest-ems", 0.95, (0.95, 0.95, 0.95), (0.90, 0.925, 0.95)),
    ],
)
def test_counts_reproduce_the_official_lower_and_upper_bounds(
    method: str, sparsity: float, prune_to: tuple[float, ...], grow_to: tuple[float, ...]
) -> None:
    mest = MESTSoftBound() if method == "mest-ems" else MEST()
    (layer,) = linear_engine(mest, 2000, sparsity).sparse_layers
    for phase in range(3):
        assert mest.keep_count(layer, phase) == round((1 - prune_to[phase]) * 2000)
        assert mest.grow_to_count(layer, phase) == round((1 - grow_to[phase]) * 2000)


# -- known answers -----------------------------------------------------------------------------------
def test_em_known_answer_magnitude_prune_and_random_regrowth() -> None:
    mest = create_updater("mest", {"update_frequency": 1})
    engine = linear_engine(mest, 20, 0.5, epochs=16)
    engine.initialize()
    weights = [0.1 * (i + 1) * (-1) ** i for i in range(10)] + [0.0] * 10
    set_layer(engine, weights, list(range(10)))
    update_now(engine, 1)  # start of epoch 1, phase 0: prune to 0.5 + 0.2 * 0.5 = 0.6, grow back to 0.5
    (layer,) = engine.sparse_layers
    mask = layer.mask[0]
    assert int(mask.sum()) == 10
    assert mask[2:10].all()  # the 8 largest |theta| (indices 2..9) are kept
    grown = torch.nonzero(mask[[0, 1] + list(range(10, 20))]).numel()
    assert grown == 2  # 2 random positions among the 12 others (just-pruned 0, 1 allowed)
    new = mask.clone()
    new[:10] = False
    assert (layer.weight.detach()[0, new] == 0).all()
    assert engine.violations() == []


def test_lambda_uses_the_sparse_gradient_only_when_asked() -> None:
    weights = [0.5, 0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0, 0]
    grad = torch.tensor([[0.0, 0.0, 0.0, 0.0, 9.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    expected = {
        "zero": ([0.5, 0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0, 0], [0, 1, 2, 3]),
        # 0.1 + 0.1 * 9 = 1.0 saves index 4; the inactive gradients (5.0) were masked away.
        "current_batch_sparse": ([0.5, 0.4, 0.3, 0.2, 1.0, 0, 0, 0, 0, 0], [0, 1, 2, 4]),
    }
    for mode, (importance, kept) in expected.items():
        mest = MEST(mest_lambda=0.1, mest_grad=mode)
        engine = linear_engine(mest, 10, 0.5, epochs=160)
        engine.initialize()
        set_layer(engine, weights, [0, 1, 2, 3, 4])
        engine.model.weight.grad = grad.clone()
        (layer,) = engine.sparse_layers

        def check(layer: MaskedLayer = layer, importance: list[float] = importance, mest: MEST = mest) -> None:
            assert mest.importance(engine.context(9, "update"), layer)[0].tolist() == pytest.approx(importance)

        step_engine(engine, 9, at_optimizer=check)  # the start of epoch 5 (phase 0): round(0.2 * 0.5 * 10) = 1 pruned
        assert all(bool(layer.mask[0, i]) for i in kept)
        assert int(layer.mask.sum()) == 5


def test_ems_grows_above_the_bound_then_prunes_back_by_magnitude() -> None:
    ems = create_updater("mest-ems", {"update_frequency": 1})
    engine = linear_engine(ems, 40, 0.5, epochs=16)
    engine.initialize()  # update at step -1 (phase 0): keep 20, grow 0.05 * 40 = 2 above the target
    (layer,) = engine.sparse_layers
    assert int(layer.mask.sum()) == 22
    weights = torch.zeros(40)
    active = torch.nonzero(layer.mask[0]).flatten().tolist()
    for rank, i in enumerate(active):
        weights[i] = 0.01 * (rank + 1)
    set_layer(engine, weights.tolist(), active)
    update_now(engine, 3)  # start of epoch 2, phase 0 again
    assert int(layer.mask.sum()) == 22
    assert all(bool(layer.mask[0, i]) for i in active[2:])  # the 20 largest survive the prune to s
    new = layer.mask[0] & ~torch.isin(torch.arange(40), torch.tensor(active))
    assert (layer.weight.detach()[0, new] == 0).all()
    update_now(engine, 9 * 2 - 1)  # epoch 9 starts phase 1: 0.025 * 40 = 1 above the target
    assert int(layer.mask.sum()) == 21
    update_now(engine, 12 * 2 - 1)  # epoch 12 starts phase 2: exactly the target, no growth
    assert int(layer.mask.sum()) == 20
    assert engine.violations() == []


def test_final_phase_is_a_frozen_mask_for_em() -> None:
    mest = create_updater("mest", {"update_frequency": 1})
    engine = linear_engine(mest, 20, 0.5, epochs=16)
    engine.initialize()
    (layer,) = engine.sparse_layers
    before = layer.mask.clone()
    update_now(engine, 12 * 2 - 1)
    assert torch.equal(layer.mask, before)


# -- invariants and the time-averaged density ----------------------------------------------------------
def test_reported_density_integrates_the_masks_actually_used() -> None:
    h = make_harness(create_updater("mest-ems", {"update_frequency": 2}), 0.8, steps_per_epoch=3, epochs=8)
    layers = h.engine.sparse_layers
    total = sum(layer.numel for layer in layers)
    used = []
    for step in range(24):
        used.append(sum(int(layer.mask.sum()) for layer in layers))  # the mask this step trains with
        h.step(step)
    report = h.engine.updater.report()
    assert report["time_averaged_density"] == pytest.approx(sum(used) / (24 * total))
    assert report["peak_density"] == pytest.approx(max(used) / total)
    assert report["time_averaged_density"] > 0.2  # above the memory bound for most of the run


def test_density_history_is_persistent_state_for_resume() -> None:
    updater, restored = MESTSoftBound(update_frequency=1), MESTSoftBound(update_frequency=1)
    h = make_harness(updater, 0.8, steps_per_epoch=2, epochs=4)
    for step in range(4):
        h.step(step)
    make_harness(restored, 0.8, steps_per_epoch=2, epochs=4).engine.load_state_dict(h.engine.state_dict())
    assert restored.active_history == updater.active_history
    assert len(updater.active_history) == 4  # the planned counts, then updates at epochs 0, 1, 2
    assert restored.report() == updater.report()


def test_bad_hyperparameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="prune_extra needs 3 values"):
        create_updater("mest", {"prune_extra": "0.2,0.1"})
    with pytest.raises(ConfigError, match="phase_boundaries"):
        create_updater("mest", {"phase_boundaries": "0.8,0.5"})
    with pytest.raises(ConfigError, match="update_frequency"):
        create_updater("mest-ems", {"update_frequency": 0})
    with pytest.raises(ConfigError, match="mest_grad"):
        create_updater("mest", {"mest_grad": "dense"})


@pytest.mark.parametrize("method", ["mest", "mest-ems"])
def test_one_epoch_smoke_run(tmp_path: Path, method: str) -> None:
    overrides = {"method": method, "epochs": 1, "out": str(tmp_path / method), "synthetic_train_samples": 256}
    cfg = resolve_config("quick", overrides=overrides)
    summary = train(cfg, progress=False)
    assert summary["topology_updates"] == 1  # the epoch-0 update, before the first step
    density = summary["method_report"]["time_averaged_density"]
    assert density == pytest.approx(1 - summary["realised_sparsity"]["sparsified"])
    assert (density > 0.14) == (method == "mest-ems")
