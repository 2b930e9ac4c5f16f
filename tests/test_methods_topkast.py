"""Top-KAST: forward set A and backward set B by |theta|, the values outside B kept for
when they come back, the exploration penalty on B \\ A, and the 2 f_A + f_B cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.engine.cost import count_forward_flops
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.methods.topkast import TopKAST, backward_count
from dstbench.core.registry import create_updater
from dstbench.train.loop import build_model, train

from .helpers import make_harness, step_engine


def top(values: np.ndarray, k: int) -> set[int]:
    """Indices of the k largest |values| (the crafted values have no ties)."""
    return set(np.argsort(-np.abs(values), kind="stable")[:k].tolist())


def positions(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask.reshape(-1)).flatten().tolist())


def linear_engine(weights: list[float], sparsity: float, decay: float = 0.0, **hp: float) -> SparseEngine:
    """One 1x10 linear layer with crafted initial weights, SGD at lr 0 (the weights only move if we
    move them), 10 steps x 10 epochs."""
    model = nn.Sequential(nn.Linear(10, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([weights]))
    plan = plan_sparsity(describe_layers(model), sparsity, "uniform", "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=decay)
    engine = SparseEngine(model, plan, create_updater("top-kast", hp), optimizer, steps_per_epoch=10, total_epochs=10)
    engine.initialize()
    return engine


W0 = [0.5, -0.1, 0.9, 0.05, -0.7, 0.3, 0.02, -0.4, 0.6, 0.2]


def test_initial_sets_are_the_top_k_of_the_dense_initial_weights() -> None:
    engine = linear_engine(W0, 0.8)  # k = 2, |B| = 4
    layer = engine.sparse_layers[0]
    backward = engine.backward_masks()[layer.name]
    assert positions(layer.mask) == top(np.array(W0), 2) == {2, 4}
    assert positions(backward) == top(np.array(W0), 4) == {2, 4, 8, 0}
    weight = layer.weight.detach()[0]
    reserve = layer.module.weight_reserve[0]  # type: ignore[index]
    # The forward pass sees A only; B \ A waits in the reserve with its initial values.
    assert weight.tolist() == pytest.approx([0, 0, 0.9, 0, -0.7, 0, 0, 0, 0, 0])
    assert reserve.tolist() == pytest.approx([0.5, 0, 0, 0, 0, 0, 0, 0, 0.6, 0])
    assert engine.violations() == []


def test_refresh_known_answer_a_stored_weight_comes_back_at_its_stored_value() -> None:
    engine = linear_engine(W0, 0.8, delta_t=10)
    layer = engine.sparse_layers[0]
    # Training moved theta on B: 2 -> 0.15, 4 -> -0.7, 0 -> 0.8, 8 -> 0.01. Outside B the stored
    # dense theta is untouched: 7 holds -0.4 and 5 holds 0.3.
    trained = {2: 0.15, 4: -0.7, 0: 0.8, 8: 0.01}
    with torch.no_grad():
        layer.weight.zero_()
        layer.module.weight_reserve.zero_()  # type: ignore[operator]
        for i, v in trained.items():
            target = layer.weight if i in (2, 4) else layer.module.weight_reserve
            target[0, i] = v  # type: ignore[index]
    theta = np.array(W0)
    for i, v in trained.items():
        theta[i] = v
    # Independent formula: A = top-2 |theta|, B = top-4 |theta| of the whole dense theta.
    expect_a, expect_b = top(theta, 2), top(theta, 4)
    assert expect_a == {0, 4} and expect_b == {0, 4, 7, 5}
    for step in range(10):  # the refresh fires after step 9 (boundary 10)
        step_engine(engine, step)
    assert len(engine.records) == 1
    backward = engine.backward_masks()[layer.name]
    assert positions(layer.mask) == expect_a and positions(backward) == expect_b
    weight, reserve = layer.weight.detach()[0], layer.module.weight_reserve[0]  # type: ignore[index]
    assert weight[0].item() == pytest.approx(0.8) and weight[4].item() == pytest.approx(-0.7)
    # 7 and 5 re-enter B \ A at their stored values (not at zero); 2 and 8 leave B and are stored.
    assert reserve[7].item() == pytest.approx(-0.4) and reserve[5].item() == pytest.approx(0.3)
    stored = engine.updater.state_dict()["stored"][layer.name][0]
    assert stored[2].item() == pytest.approx(0.15) and stored[8].item() == pytest.approx(0.01)
    assert bool((stored[list(expect_b)] == 0).all())
    assert engine.violations() == []


def test_exploration_penalty_known_answer() -> None:
    decay = 1e-2
    engine = linear_engine(W0, 0.8, decay=decay)
    layer = engine.sparse_layers[0]
    x = torch.arange(1.0, 11.0).unsqueeze(0)
    loss = engine.model(x).sum()
    loss.backward()
    dense = layer.weight.grad.detach().clone()  # type: ignore[union-attr]

    def check() -> None:  # the gradient the optimizer is handed
        grad = layer.weight.grad[0]  # type: ignore[index]
        theta = np.array(W0)
        d = layer.k / layer.numel
        for i in range(10):
            if i in (2, 4):  # A: the gradient as it is (the optimizer adds lambda * theta)
                assert grad[i].item() == pytest.approx(dense[0, i].item())
            elif i in (0, 8):  # B \ A: plus (1/D - 1) lambda theta, so lambda / D in all
                assert grad[i].item() == pytest.approx(dense[0, i].item() + (1 / d - 1) * decay * theta[i])
            else:  # outside B: no gradient at all
                assert grad[i].item() == 0.0

    step_engine(engine, 0, at_optimizer=check)


def test_invariants_every_step_and_b_minus_a_is_trained() -> None:
    h = make_harness(create_updater("top-kast", {"delta_t": 3}), 0.8, steps_per_epoch=5, epochs=3)
    layers = h.engine.sparse_layers
    reserves = [layer.module.weight_reserve.clone() for layer in layers]  # type: ignore[operator]
    changed = [False] * len(layers)
    for step in range(15):
        h.step(step)
        assert h.engine.violations() == []
        backward = h.engine.backward_masks()
        for i, layer in enumerate(layers):
            b = backward[layer.name]
            outside = b & ~layer.mask
            reserve = layer.module.weight_reserve  # type: ignore[union-attr]
            # exact counts of A and of B
            assert int(layer.mask.sum()) == layer.k
            assert int(b.sum()) == backward_count(layer, 2.0)
            # the forward pass sees A only; B \ A lives in the reserve; state is zero off B
            assert float(layer.weight.detach()[~layer.mask].abs().max()) == 0.0
            assert float(reserve[~outside].abs().max()) == 0.0
            assert float(h.optimizer.state[layer.weight]["momentum_buffer"][~b].abs().max()) == 0.0
            changed[i] |= bool((reserve[outside] != reserves[i][outside]).any())
            reserves[i] = reserve.clone()
    assert all(changed)  # B \ A is kept and trained
    assert len(h.engine.records) == 4  # boundaries 3, 6, 9, 12 (not 15, the end)


def test_ratio_one_is_forward_only_and_bad_ratio_is_a_config_error() -> None:
    engine = linear_engine(W0, 0.8, backward_density_ratio=1.0)
    layer = engine.sparse_layers[0]
    assert torch.equal(engine.backward_masks()[layer.name], layer.mask)
    with pytest.raises(ConfigError):
        create_updater("top-kast", {"backward_density_ratio": 0.5})


def test_state_round_trip() -> None:
    engine = linear_engine(W0, 0.8)
    state = engine.updater.state_dict()
    other = TopKAST()
    other.load_state_dict(state)
    assert torch.equal(other.state_dict()["stored"]["0"], state["stored"]["0"])


def test_one_epoch_smoke_run_charges_two_f_a_plus_f_b(tmp_path: Path) -> None:
    overrides = {"method": "top-kast", "epochs": 1, "out": str(tmp_path / "run"), "synthetic_train_samples": 256}
    summary = train(resolve_config("quick", overrides=overrides, hp={"delta_t": 2}), progress=False)
    assert summary["topology_updates"] == 1  # 4 steps: a refresh at boundary 2
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=2e-3)
    # Independent cost: forward and input-gradient at A's densities, weight-gradient at B's.
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())["layers"]
    forward = count_forward_flops(build_model("tiny_cnn", 10), 32)
    f_a = forward.at({e["name"]: e["target_active"] / e["numel"] for e in plan})
    f_b = forward.at({e["name"]: min(e["numel"], round(2 * e["target_active"])) / e["numel"] for e in plan})
    assert summary["flops"]["train_flops_per_sample"] == pytest.approx(2 * f_a + f_b, rel=1e-9)
    assert f_b > f_a
