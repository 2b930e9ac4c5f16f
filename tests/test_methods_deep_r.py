"""Deep-R: fixed signs, L1 + Langevin noise on active theta, dormancy, random reactivation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.engine.sparse_engine import SparseEngine, derive_seed
from dstbench.methods.deep_r import split_reactivations
from dstbench.core.registry import create_updater
from dstbench.train.loop import train

from .helpers import SmallNet, make_harness, step_engine
from .methods_helpers import active_positions, crafted_engine, quick_config


def crafted(**hp: float) -> SparseEngine:
    """Layer 0: 6 active, two of them past zero against their sign; layer 1: full, one past zero."""
    engine = crafted_engine(
        "deep-r",
        [
            ([0.5, -0.4, 0.3, -0.2, 0.1, 0.25, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5]),
            ([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0], list(range(10))),
        ],
        {"reactivation_value": 0.01, **hp},
    )
    first, second = engine.sparse_layers
    positive = engine.updater.positive  # type: ignore[attr-defined]
    positive[first.name] = torch.tensor([[True, False, True, True, True, False, True, False, True, False]])
    positive[second.name] = torch.tensor([[True, False, True, False, True, False, True, True, True, False]])
    return engine


def test_dormant_connections_are_replaced_at_random_in_layers_with_room() -> None:
    engine = crafted()
    step_engine(engine, 0)
    first, second = active_positions(engine)
    # theta = s * w < 0 at layer 0's 3 (s=+, w<0) and 5 (s=-, w>0), and layer 1's 7 (s=+, w<0): 3 dormant.
    # Layer 1 has no dormant connection left to reactivate (7 just died), so all 3 go to layer 0's 6..9.
    assert second == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert set(first) >= {0, 1, 2, 4} and not {3, 5} & set(first) and len(first) == 7
    grown = set(first) - {0, 1, 2, 4}
    assert grown <= {6, 7, 8, 9}
    weight = engine.sparse_layers[0].weight.detach()[0]
    for i in grown:  # theta = reactivation_value, with the connection's fixed sign (+ at 6, 8; - at 7, 9)
        assert float(weight[i]) == pytest.approx(0.01 if i in (6, 8) else -0.01)
    assert weight[[0, 1, 2, 4]].tolist() == pytest.approx([0.5, -0.4, 0.3, 0.1])
    assert engine.updater.report()["deactivated"] == 3  # type: ignore[attr-defined]
    assert engine.violations() == []


def test_l1_and_langevin_noise_move_theta_as_in_the_paper() -> None:
    engine = crafted_engine(
        "deep-r",
        [([0.5, -0.4, 0.3, 0.2, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3]), ([0.1, -0.2, 0.3, 0.4, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3])],
        {"alpha": 0.5, "temperature": 0.02},
        optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.1),  # only its learning rate is read
    )
    layers = engine.sparse_layers
    for layer in layers:
        engine.updater.positive[layer.name] = layer.weight.detach() >= 0  # type: ignore[attr-defined]
        layer.weight.grad = torch.zeros_like(layer.weight)
    theta_before = [layer.weight.detach().abs().clone() for layer in layers]

    def check() -> None:  # what the optimizer is handed, after the method's per-step hook
        # Independent formula: eta = 0.1, g = M * (alpha * s - sqrt(2 T / eta) * nu), nu from the step's generator.
        rng = torch.Generator().manual_seed(derive_seed(0, 4, "step"))
        for layer, before in zip(layers, theta_before):
            nu = torch.randn(layer.weight.shape, generator=rng)
            sign = torch.where(layer.weight.detach() >= 0, 1.0, -1.0)
            expected = layer.mask * (0.5 * sign - math.sqrt(2 * 0.02 / 0.1) * nu)
            assert torch.allclose(layer.weight.grad, expected)  # type: ignore[arg-type]
            # A plain SGD step then moves theta by -eta * alpha + sqrt(2 eta T) * s * nu on active connections.
            with torch.no_grad():
                step = -0.1 * layer.weight.grad  # type: ignore[operator]
            theta_after = (sign * (layer.weight.detach() + step))[layer.mask]
            expected_theta = before[layer.mask] - 0.1 * 0.5 + math.sqrt(2 * 0.1 * 0.02) * (sign * nu)[layer.mask]
            assert torch.allclose(theta_after, expected_theta)

    step_engine(engine, 4, at_optimizer=check)


def test_split_reactivations_respects_caps_and_total() -> None:
    rng = torch.Generator().manual_seed(0)
    assert split_reactivations(5, [1, 1, 1], [0, 5, 0], rng) == [0, 5, 0]
    counts = split_reactivations(1000, [9, 1], [2000, 2000], rng)
    assert sum(counts) == 1000 and 850 < counts[0] < 950  # proportional to the planned counts
    with pytest.raises(ValueError, match="dormant"):
        split_reactivations(3, [1, 1], [1, 1], rng)


# -- invariants ----------------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(
    sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.99, 0.999999]),
    distribution=st.sampled_from(["uniform", "erk"]),
    temperature=st.sampled_from([0.0, 1e-4, 1e-2]),
)
def test_exact_total_and_signs_hold_after_every_step(sparsity: float, distribution: str, temperature: float) -> None:
    updater = create_updater("deep-r", {"temperature": temperature, "alpha": 1e-3})
    h = make_harness(updater, sparsity, distribution, model=SmallNet(), steps_per_epoch=3, epochs=4)
    budget = sum(layer.k for layer in h.engine.sparse_layers)
    for step in range(11):
        h.step(step)
        assert h.engine.violations() == []
        assert sum(int(layer.mask.sum()) for layer in h.engine.sparse_layers) == budget
        for layer in h.engine.sparse_layers:
            theta = updater.sign(layer) * layer.weight.detach()  # type: ignore[attr-defined]
            assert bool((theta[layer.mask] >= 0).all())
    assert len(h.engine.records) == 11


def test_needs_a_per_step_hook_and_a_global_budget() -> None:
    needs = create_updater("deep-r").needs
    assert (needs.dense_grad, needs.per_step_hook, needs.density_policy) == ("never", True, "global")


def test_one_epoch_quick_smoke_run(tmp_path: Path) -> None:
    summary = train(quick_config("deep-r", tmp_path / "run", hp={"temperature": 1e-6}), progress=False)
    assert summary["topology_updates"] == 3  # after every step but the last of 4
    assert summary["method_report"]["rewirings"] == 3
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=1e-3)
