"""GraNet (VITA-Group/GraNet): the cubic ramp of the global total, global magnitude pruning, the cosine
death rate and gradient regrowth, checked against independent formulas on crafted layers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.engine.cost import count_forward_flops, predict_flops, run_flops
from dstbench.core.distributions import active_count, layer_densities, plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.methods.granet import GraNet
from dstbench.core.registry import create_updater
from dstbench.train.loop import train
from dstbench.core.updater import StepInfo

from .helpers import build_engine, make_harness, step_engine


def info(boundary: int, steps_per_epoch: int, epochs: int) -> StepInfo:
    return StepInfo(step=boundary - 1, steps_per_epoch=steps_per_epoch, total_epochs=epochs)


def test_cubic_ramp_end_points_and_middle() -> None:
    updater = create_updater("granet", {"delta_t": 10, "prune_end": 0.5})
    h = make_harness(updater, 0.9, "erk", steps_per_epoch=20, epochs=10)
    layers = h.engine.sparse_layers
    updater = h.engine.updater
    assert isinstance(updater, GraNet)
    final = sum(layer.k for layer in layers)
    # The initial total: the plan's distribution (ERK) at initial_density 0.5, per layer never below k.
    densities = layer_densities([layer.target.layer for layer in layers], 0.5, "erk")
    initial = sum(max(layer.k, active_count(layer.numel, densities[layer.name])) for layer in layers)
    assert updater.total_at(info(0, 20, 10), layers) == initial == sum(int(layer.mask.sum()) for layer in layers)
    # T = 200, prune_end 0.5 -> the last update in the window is at boundary 100: the target there.
    assert updater.total_at(info(100, 20, 10), layers) == final
    assert updater.total_at(info(200, 20, 10), layers) == final
    for b in (10, 40, 70):  # Zhu & Gupta: K + (K_0 - K)(1 - b/100)^3
        assert updater.total_at(info(b, 20, 10), layers) == final + round((initial - final) * (1 - b / 100) ** 3)


def test_ramp_ends_at_the_last_update_inside_the_window() -> None:
    updater = GraNet(delta_t=30, prune_end=0.5)  # T = 200: window ends at 100, last update at 90
    assert updater.ramp_end(200) == 90
    assert updater.remaining(90, 200) == 0.0 and updater.remaining(60, 200) == pytest.approx((1 - 60 / 90) ** 3)
    assert GraNet(delta_t=300).ramp_end(200) == 0  # no update inside the window: start at the plan


def test_death_rate_is_the_official_per_step_cosine() -> None:
    updater = GraNet()
    for b in (0, 250, 500, 1000):
        expected = 0.005 + (0.5 - 0.005) / 2 * (1 + math.cos(math.pi * b / 1000))
        assert updater.death_rate_at(info(b, 100, 10)) == pytest.approx(expected)


def two_linear_engine(
    weights: list[list[float]], grads: list[list[float]], active: list[list[int]], min_active: int = 1
) -> SparseEngine:
    """Two 1x10 linear layers (plan: 2 of 10 each), crafted active sets, weights and gradients; 10 steps
    x 10 epochs, delta_t 10, pruning window to half of training; SGD at lr 0."""
    model = nn.Sequential(nn.Linear(10, 1, bias=False), nn.Linear(10, 1, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = build_engine("granet", 0.8, hp={"delta_t": 10, "prune_end": 0.5}, model=model, optimizer=optimizer,
                          steps_per_epoch=10, epochs=10, min_active=min_active)
    for layer, w, g, on in zip(engine.sparse_layers, weights, grads, active):
        mask = torch.zeros(1, 10, dtype=torch.bool)
        mask[0, on] = True
        layer.mask.copy_(mask)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([w]) * mask)
        layer.weight.grad = torch.tensor([g])
    return engine


def test_update_known_answer_global_prune_then_regenerate() -> None:
    weights = [[0.9, -0.2, 0.4, 0.0, 0.05, 0.0, 0.7, 0.0, 0.0, 0.0],
               [0.3, 0.0, -0.6, 0.0, 0.1, 0.0, 0.0, 0.8, 0.0, 0.15]]
    grads = [[0.1, 0.2, 0.3, 0.9, 0.4, 0.05, 0.6, 0.2, 0.5, 0.01],
             [0.7, 0.3, 0.2, 0.1, 0.6, 0.25, 0.4, 0.35, 0.9, 0.02]]
    active = [[0, 1, 2, 4, 6], [0, 2, 4, 7, 9]]
    engine = two_linear_engine(weights, grads, active)
    # Independent formula. Boundary 10 of T = 100, ramp end 50: total = 4 + round(6 * 0.8^3) = 7.
    total = 4 + round(6 * (1 - 10 / 50) ** 3)
    assert total == 7
    flat = [(abs(w), li, i) for li in range(2) for i, w in enumerate(weights[li]) if i in active[li]]
    survivors = sorted(flat, key=lambda t: -t[0])[:total]  # one global magnitude threshold
    rate = 0.005 + 0.2475 * (1 + math.cos(math.pi * 10 / 100))
    expected = []
    for li in range(2):
        mine = sorted([(a, i) for a, l, i in survivors if l == li], key=lambda t: -t[0])
        death = math.ceil(rate * len(mine))
        keep = {i for _, i in mine[: len(mine) - death]}
        others = [i for i in np.argsort(-np.array(grads[li]), kind="stable").tolist() if i not in keep]
        expected.append(keep | set(others[:death]))
    # Layer 0 keeps 4 after global pruning (2 regenerated), layer 1 keeps 3 (2 regenerated, one of
    # them the just-removed entry 0, whose gradient is large).
    assert expected == [{0, 6, 3, 8}, {0, 7, 8}]
    step_engine(engine, 9)
    got = [set(torch.nonzero(layer.mask[0]).flatten().tolist()) for layer in engine.sparse_layers]
    assert got == expected
    assert engine.violations() == []
    # Regrown weights start at zero; survivors keep their value.
    first = engine.sparse_layers[0].weight.detach()[0]
    assert first[3].item() == 0.0 and first[8].item() == 0.0 and first[0].item() == pytest.approx(0.9)


def test_totals_exact_at_every_update_and_plan_at_the_end() -> None:
    updater = create_updater("granet", {"delta_t": 3, "prune_end": 0.6})
    h = make_harness(updater, 0.9, "erk", steps_per_epoch=5, epochs=4)
    updater = h.engine.updater
    totals = []
    for step in range(20):
        h.step(step)
        assert h.engine.violations() == []
        if h.engine.records and h.engine.records[-1].step == step + 1:
            totals.append(sum(int(layer.mask.sum()) for layer in h.engine.sparse_layers))
            assert totals[-1] == updater.total_at(h.engine.info(step), h.engine.sparse_layers)
    assert totals == sorted(totals, reverse=True) and totals[-1] == sum(layer.k for layer in h.engine.sparse_layers)
    assert h.engine.violations(final=True) == []


def test_bad_hyperparameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="death_rate_min"):
        create_updater("granet", {"death_rate": 0.1, "death_rate_min": 0.2})
    with pytest.raises(ConfigError, match="prune_start"):
        create_updater("granet", {"prune_start": 0.6, "prune_end": 0.5})


def test_prediction_integrates_the_scheduled_totals_exactly_when_flops_do_not_depend_on_the_spread() -> None:
    """On an MLP every weight costs 2 FLOPs, so a run's FLOPs depend only on its totals, which GraNet's
    schedule fixes: the prediction must match the run (the per-layer spread, which global pruning
    decides during training, cannot matter here)."""

    def mlp() -> nn.Module:
        torch.manual_seed(0)
        layers = [nn.Flatten(), nn.Linear(3 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)]
        return nn.Sequential(*layers)

    hp = {"delta_t": 3, "prune_end": 0.6}
    model = mlp()
    plan = plan_sparsity(describe_layers(model), 0.9, "erk")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, plan, create_updater("granet", hp), opt, steps_per_epoch=5, total_epochs=4)
    engine.initialize()
    for step in range(20):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 3, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        engine.step(step)
        opt.zero_grad(set_to_none=True)
    recorded = run_flops(engine, 4, 40)
    fresh = mlp()
    predicted = predict_flops(count_forward_flops(fresh, 4), fresh, plan, create_updater("granet", hp),
                              epochs=4, train_samples=40, batch_size=8, input_size=4)
    assert predicted["mask_updates"] == len(engine.records)
    assert predicted["train_flops"] == pytest.approx(recorded["train_flops"], rel=2e-3)  # per-layer rounding only


def test_one_epoch_smoke_run(tmp_path: Path) -> None:
    overrides = {"method": "granet", "epochs": 1, "out": str(tmp_path / "run"), "synthetic_train_samples": 256}
    summary = train(resolve_config("quick", overrides=overrides, hp={"delta_t": 1, "prune_end": 0.75}), progress=False)
    assert summary["topology_updates"] == 3  # 4 steps: boundaries 1, 2, 3; the ramp ends at 3
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=2e-3)


def test_the_collapse_guard_keeps_a_layer_that_global_pruning_would_empty() -> None:
    weights = [[0.9, 0.8, 0.7, 0.6, 0.5, 0, 0, 0, 0, 0], [0.01, 0.02, 0.03, 0.04, 0.05, 0, 0, 0, 0, 0]]
    engine = two_linear_engine(weights, [[0.0] * 10, [1.0] * 10], [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    step_engine(engine, 39)  # boundary 40: total 4; --min-active 1 keeps layer 1's largest weight
    report = engine.updater.report()
    assert report["active"] == {"0": 3, "1": 1} and report["collapsed_layers"] == []


def test_a_layer_emptied_by_global_pruning_is_reported() -> None:
    """With ``--min-active 0`` (GraNet's reference: no guard) a layer can collapse; the report says so."""
    weights = [[0.9, 0.8, 0.7, 0.6, 0.5, 0, 0, 0, 0, 0], [0.01, 0.02, 0.03, 0.04, 0.05, 0, 0, 0, 0, 0]]
    grads = [[0.0] * 10, [1.0] * 10]
    engine = two_linear_engine(weights, grads, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], min_active=0)
    step_engine(engine, 39)  # boundary 40: total 4 + round(6 * 0.2^3) = 4, all of it in layer 0
    report = engine.updater.report()
    assert report["active"] == {"0": 4, "1": 0} and report["collapsed_layers"] == ["1"]
