"""Known-answer tests of the built-in methods on crafted layers, and their schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater, list_methods
from tests.helpers import step_engine
from dstbench.core.updater import MaskUpdater, StepInfo


def crafted_engine(updater: MaskUpdater, weights: list[float], active: list[int], k: int) -> SparseEngine:
    """A single 1x10 linear layer with the given weights and active set (k of 10 active)."""
    model = nn.Linear(10, 1, bias=False)
    plan = plan_sparsity(describe_layers(model), 1 - k / 10, "uniform", "none", min_active=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, plan, updater, optimizer, steps_per_epoch=10, total_epochs=100)
    engine.initialize()
    (layer,) = engine.sparse_layers
    assert layer.k == k
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, active] = True
    layer.mask.copy_(mask)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]) * mask)
    return engine


def test_builtins_are_registered() -> None:
    assert {"dense", "static", "set", "rigl"} <= set(list_methods())


def test_rigl_drop_and_grow_on_a_crafted_layer() -> None:
    rigl = create_updater("rigl", {"drop_fraction": 0.4, "delta_t": 100, "t_end": 0.75})
    weights = [0.5, -0.1, 0.3, 0.05, -0.9, 0, 0, 0, 0, 0]
    engine = crafted_engine(rigl, weights, [0, 1, 2, 3, 4], k=5)
    model = engine.model
    assert isinstance(model, nn.Linear)
    # Dense gradient: the best inactive magnitudes are at 6 (0.9) and 8 (0.8); index 3 (just dropped) has 0.7.
    model.weight.grad = torch.tensor([[0.0, 0.0, 0.0, 0.7, 0.0, 0.2, -0.9, 0.1, 0.8, 0.0]])
    momentum_before = torch.ones(1, 10)
    engine.optimizer.state[model.weight]["momentum_buffer"] = momentum_before.clone()  # type: ignore[union-attr]
    step_engine(engine, 0)
    assert engine.skipped_steps == 1  # TF RigL: no weight update on a mask step
    (layer,) = engine.sparse_layers
    # floor(0.4 * 5) = 2 dropped: the smallest |w| are index 3 (0.05) and index 1 (0.1).
    assert torch.nonzero(layer.mask[0]).flatten().tolist() == [0, 2, 4, 6, 8]
    assert model.weight[0].tolist() == pytest.approx([0.5, 0, 0.3, 0, -0.9, 0, 0, 0, 0, 0])
    momentum = engine.optimizer.state[model.weight]["momentum_buffer"]  # type: ignore[union-attr]
    assert momentum[0].tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0]  # survivors keep state, grown start at 0
    (record,) = engine.records
    assert (record.grown, record.dropped) == (2, 2)
    assert record.iou == pytest.approx(3 / 7)


def test_rigl_regrows_a_just_dropped_weight_with_its_value() -> None:
    rigl = create_updater("rigl", {"drop_fraction": 0.4})
    engine = crafted_engine(rigl, [0.5, -0.1, 0.3, 0.05, -0.9, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4], k=5)
    engine.model.weight.grad = torch.tensor([[0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    step_engine(engine, 0)
    (layer,) = engine.sparse_layers
    assert torch.nonzero(layer.mask[0]).flatten().tolist() == [0, 1, 2, 4, 6]
    assert float(engine.model.weight.detach()[0, 1]) == pytest.approx(-0.1)  # TF reinit_when_same=False


def test_rigl_schedule_and_cosine_drop_fraction() -> None:
    rigl = create_updater("rigl")
    updates = [t for t in range(1000) if rigl.is_update_step(StepInfo(t, steps_per_epoch=10, total_epochs=100))]
    assert updates == [0, 100, 200, 300, 400, 500, 600, 700]
    assert not rigl.is_update_step(StepInfo(-1, steps_per_epoch=10, total_epochs=100))
    from dstbench.core.dropgrow import cosine_decay

    assert cosine_decay(0.3, 0, 750) == pytest.approx(0.3)
    assert cosine_decay(0.3, 375, 750) == pytest.approx(0.15)
    assert cosine_decay(0.3, 750, 750) == pytest.approx(0.0)
    assert create_updater("rigl", {"skip_weight_update_on_mask_step": "false"}).needs.skip_optimizer_on_update is False


def test_set_drops_closest_to_zero_on_each_side_and_regrows_randomly() -> None:
    set_ = create_updater("set", {"zeta": 0.5})
    weights = [0.5, -0.1, 0.3, 0.05, -0.9, -0.2, 0, 0, 0, 0]
    engine = crafted_engine(set_, weights, [0, 1, 2, 3, 4, 5], k=6)
    # n_rm = ceil(0.5 * 6) = 3 -> ceil(3/2) = 2 per sign: positives 0.05, 0.3; negatives -0.1, -0.2.
    info = StepInfo(9, steps_per_epoch=10, total_epochs=100)
    assert set_.is_update_step(info)
    engine.model.weight.grad = torch.zeros(1, 10)
    step_engine(engine, 9)
    (layer,) = engine.sparse_layers
    mask = layer.mask[0]
    assert bool(mask[0]) and bool(mask[4])  # 0.5 and -0.9 survive
    assert int(mask.sum()) == 6
    (record,) = engine.records
    assert record.dropped == 4 - (int(mask[[1, 2, 3, 5]].sum()))  # re-grown just-dropped entries are survivors


def test_set_schedule_is_end_of_every_epoch_but_the_last() -> None:
    set_ = create_updater("set")
    steps = [t for t in range(-1, 50) if set_.is_update_step(StepInfo(t, steps_per_epoch=10, total_epochs=5))]
    assert steps == [9, 19, 29, 39]


def test_unknown_hyperparameters_and_types() -> None:
    with pytest.raises(ConfigError, match="unknown hyper-parameter 'alpha'.*delta_t"):
        create_updater("rigl", {"alpha": "0.1"})
    with pytest.raises(ConfigError, match="delta_t: expected int"):
        create_updater("rigl", {"delta_t": "ten"})
    with pytest.raises(ConfigError, match="magnitude_and_negativity, magnitude"):
        create_updater("set", {"drop_criterion": "random"})
    with pytest.raises(ConfigError, match="unknown method 'foo'; choose from"):
        create_updater("foo")
    assert create_updater("rigl", {"delta_t": "50", "t_end": "0.5"}).hyperparameters()["delta_t"] == 50
