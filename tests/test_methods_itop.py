"""RigL-ITOP: RigL selection with ITOP's rounding, schedule and death-rate decay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.methods.rigl_itop import RigLITOP
from dstbench.core.registry import create_updater
from dstbench.train.loop import train
from tests.helpers import step_engine
from dstbench.core.updater import MaskUpdater, StepInfo, UpdateContext



def crafted_engine(updater: MaskUpdater, weights: list[float], active: list[int]) -> SparseEngine:
    """One 1x10 linear layer holding ``weights`` on the ``active`` positions; 10 steps x 100 epochs."""
    model = nn.Linear(10, 1, bias=False)
    plan = plan_sparsity(describe_layers(model), 1 - len(active) / 10, "uniform", "none", min_active=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, plan, updater, optimizer, steps_per_epoch=10, total_epochs=100)
    engine.initialize()
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, active] = True
    engine.sparse_layers[0].mask.copy_(mask)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]) * mask)
    return engine


def itop_rate(step: int, total: int, p0: float = 0.5, eta_min: float = 0.005) -> float:
    """ITOP's ``CosineDecay`` after ``step + 1`` calls of ``step()``, written out independently."""
    return eta_min + 0.5 * (p0 - eta_min) * (1 + math.cos(math.pi * (step + 1) / total))


def test_defaults_are_the_itop_recipe() -> None:
    itop = create_updater("rigl-itop")
    hp = itop.hyperparameters()
    assert (hp["drop_fraction"], hp["delta_t"], hp["t_end"], hp["drop_fraction_min"]) == (0.5, 4000, 1.0, 0.005)
    assert hp["skip_weight_update_on_mask_step"] is False
    assert itop.needs.dense_grad == "update_steps" and itop.needs.masked_optimizer


def test_known_answer_ceil_magnitude_drop_and_gradient_growth() -> None:
    itop = create_updater("rigl-itop", {"delta_t": 100})
    engine = crafted_engine(itop, [0.5, -0.1, 0.3, 0.05, -0.9, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4])
    model = engine.model
    assert isinstance(model, nn.Linear)
    rate = itop_rate(99, 1000)
    assert rate == pytest.approx(0.4879, abs=1e-4)
    # ceil(0.488 * 5) = 3 dropped (RigL's floor would drop 2): |w| 0.05, 0.1, 0.3 go; 0.5 and -0.9 stay.
    model.weight.grad = torch.tensor([[0.0, 0.0, 0.6, 0.0, 0.0, 0.2, -0.9, 0.1, 0.8, 0.0]])
    optimizer = engine.optimizer
    assert optimizer is not None
    optimizer.state[model.weight]["momentum_buffer"] = torch.ones(1, 10)
    step_engine(engine, 99)
    assert engine.skipped_steps == 0  # the optimizer step is NOT skipped on a mask step
    (layer,) = engine.sparse_layers
    # Grown: the 3 largest |grad| off keep: 6 (0.9), 8 (0.8), and 2 (0.6, just dropped, so a survivor).
    assert torch.nonzero(layer.mask[0]).flatten().tolist() == [0, 2, 4, 6, 8]
    assert model.weight[0].tolist() == pytest.approx([0.5, 0, 0.3, 0, -0.9, 0, 0, 0, 0, 0])
    momentum = optimizer.state[model.weight]["momentum_buffer"]
    assert momentum[0].tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    (record,) = engine.records
    assert (record.step, record.grown, record.dropped) == (100, 2, 2)
    assert engine.violations() == []


def test_schedule_counts_steps_from_one_and_never_updates_after_the_last_step() -> None:
    itop = create_updater("rigl-itop", {"delta_t": 25})
    steps = [t for t in range(-1, 100) if itop.is_update_step(StepInfo(t, steps_per_epoch=10, total_epochs=10))]
    assert steps == [24, 49, 74]  # (t+1) % 25 == 0; t = 99 is the last step of the run
    early = create_updater("rigl-itop", {"delta_t": 25, "t_end": 0.5})
    assert [t for t in range(100) if early.is_update_step(StepInfo(t, 10, 10))] == [24, 49]


@pytest.mark.parametrize("step", [-1, 0, 499, 998, 999])
def test_death_rate_decays_per_iteration_over_the_whole_run(step: int) -> None:
    itop = RigLITOP()
    ctx = UpdateContext(info=StepInfo(step, 10, 100), layers=[], rng=torch.Generator(), lr=0.1, optimizer=None)
    assert itop.drop_fraction_at(ctx) == pytest.approx(itop_rate(step, 1000))


def test_death_rate_end_points() -> None:
    assert itop_rate(-1, 1000) == pytest.approx(0.5)
    assert itop_rate(499, 1000) == pytest.approx(0.2525)
    assert itop_rate(999, 1000) == pytest.approx(0.005)


def test_bad_hyperparameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="delta_t"):
        create_updater("rigl-itop", {"delta_t": 0})
    with pytest.raises(ConfigError, match="drop_fraction_min"):
        create_updater("rigl-itop", {"drop_fraction": 0.3, "drop_fraction_min": 0.4})
    with pytest.raises(ConfigError, match="t_end"):
        create_updater("rigl-itop", {"t_end": 0})


def test_one_epoch_smoke_run(tmp_path: Path) -> None:
    cfg = resolve_config(
        "quick",
        overrides={"method": "rigl-itop", "epochs": 1, "out": str(tmp_path / "run"), "synthetic_train_samples": 256},
        hp={"delta_t": 1},
    )
    summary = train(cfg, progress=False)
    assert summary["topology_updates"] == 3  # 4 steps: after steps 0, 1, 2
    assert summary["itop_rate"] > 1 - cfg.sparsity
    assert summary["needs"]["dense_grad"] == "update_steps"
