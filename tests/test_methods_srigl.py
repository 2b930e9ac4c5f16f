"""SRigL (calgaryml/condensed-sparsity): constant fan-in at every update, neuron ablation on a crafted
layer with its fan-in moved to the surviving neurons, and the fan-in in ``method_report`` and ``inspect``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.cli.app import main
from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.inspect import inspect_run, render_inspection
from dstbench.core.layers import describe_layers
from dstbench.methods.srigl import fan_in_counts, neurons_to_ablate
from dstbench.core.registry import create_updater
from dstbench.train.loop import train

from .helpers import make_harness, step_engine


def test_ablation_rule_known_answers() -> None:
    counts = torch.tensor([5, 0, 4, 2, 6])
    # threshold max(1, int(0.6 * (20 // 5))) = 2; K // F = 20 // 10 = 2 -> the 3rd largest (4) is not
    # below it, so the threshold stays 2 and only neuron 1 (0 salient) is ablated.
    assert neurons_to_ablate(counts, 20, 10, 0.6).tolist() == [False, True, False, False, False]
    # threshold int(1.0 * 4) = 4 would ablate 1 and 3; that leaves 3 neurons >= K // F + 1 = 3: allowed.
    assert neurons_to_ablate(counts, 20, 10, 1.0).tolist() == [False, True, False, True, False]
    # With K // F = 3 the 4th largest count (2) lowers the threshold to 2: neuron 3 survives.
    assert neurons_to_ablate(counts, 30, 10, 1.0).tolist() == [False, True, False, False, False]
    # Fewer weights than neurons: only K neurons can stay (the least salient go, later ones first).
    assert neurons_to_ablate(torch.tensor([1, 1, 1, 1]), 2, 3, 0.0).tolist() == [False, False, True, True]


def crafted_engine() -> SparseEngine:
    """A 4x10 linear layer (K = 20 of 40: fan-in 5) followed by a dense-profile-free 3x4 head, so the
    crafted layer is not the last one (which SRigL never ablates)."""
    model = nn.Sequential(nn.Linear(10, 4, bias=False), nn.Linear(4, 3, bias=False))
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    updater = create_updater("srigl", {"delta_t": 10, "gamma_sal": 0.6})
    engine = SparseEngine(model, plan, updater, optimizer, steps_per_epoch=10, total_epochs=10)
    engine.initialize()
    return engine


def test_update_known_answer_ablates_a_weak_neuron_and_moves_its_fan_in() -> None:
    engine = crafted_engine()
    layer = engine.sparse_layers[0]
    assert layer.k == 20 and fan_in_counts(layer.mask).tolist() == [5, 5, 5, 5]
    rng = np.random.default_rng(0)
    mask = np.zeros((4, 10), dtype=bool)
    for row, cols in enumerate([[0, 1, 2, 3, 4], [2, 3, 4, 5, 6], [5, 6, 7, 8, 9], [0, 2, 4, 6, 8]]):
        mask[row, cols] = True
    magnitudes = rng.permutation(np.arange(1, 41)).reshape(4, 10) / 10.0  # distinct, all >= 0.1
    magnitudes[3] = np.arange(1, 11) / 1000.0  # neuron 3: tiny weights
    weights = magnitudes * mask
    grads = rng.permutation(np.arange(1, 41)).reshape(4, 10) / 100.0
    grads[3] = 0.0  # ... and no gradient: nothing about it is salient
    with torch.no_grad():
        layer.mask.copy_(torch.from_numpy(mask))
        layer.weight.copy_(torch.from_numpy(weights).float())
    layer.weight.grad = torch.from_numpy(grads).float()

    # Independent formula. rigl_torch's first update: after iteration delta_t = 10 (step 9), drop
    # fraction alpha/2 (1 + cos(pi * 10 / T_end)), T_end = int(0.75 * 100) = 75.
    n_drop = int(0.15 * (1 + math.cos(math.pi * 10 / 75)) * 20)
    assert n_drop == 5
    n_keep = 20 - n_drop
    flat_w, flat_g = weights.reshape(-1), grads.reshape(-1)
    salient = np.zeros(40, dtype=bool)
    salient[np.argsort(-flat_w, kind="stable")[:n_keep]] = True
    salient[np.argsort(-flat_g, kind="stable")[:n_drop]] = True
    per_neuron = salient.reshape(4, 10).sum(1)
    threshold = max(1, int(0.6 * (20 // 4)))  # 3
    assert per_neuron[3] == 0 and (per_neuron[:3] >= threshold).all()
    fan_in = 20 // 3  # the ablated neuron's weights move to the other three
    kept_order = [i for i in np.argsort(-flat_w, kind="stable") if mask.reshape(-1)[i] and i // 10 != 3][:n_keep]
    expected = np.zeros((4, 10), dtype=bool)
    for row in range(3):
        keep = [i % 10 for i in kept_order if i // 10 == row][:fan_in]
        grow = [c for c in np.argsort(-grads[row], kind="stable") if c not in keep][: fan_in - len(keep)]
        expected[row, keep + grow] = True

    for step in range(9):
        assert not engine.update_due(step)
    step_engine(engine, 9)
    assert len(engine.records) == 1
    assert np.array_equal(layer.mask.numpy(), expected)
    assert fan_in_counts(layer.mask).tolist() == [6, 6, 6, 0]
    assert engine.violations() == []  # 18 <= K = 20 under density_policy="at_most"
    report = engine.updater.report()["fan_in"][layer.name]
    assert report == {"min": 6, "max": 6, "active_neurons": 3, "ablated_neurons": 1}


@settings(max_examples=8, deadline=None)
@given(sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.97]), seed=st.integers(0, 3))
def test_constant_fan_in_at_every_update(sparsity: float, seed: int) -> None:
    h = make_harness(create_updater("srigl", {"delta_t": 2}), sparsity, "erk", steps_per_epoch=4, epochs=2, seed=seed)
    for step in range(8):
        h.step(step, seed)
        assert h.engine.violations() == []
        for layer in h.engine.sparse_layers:
            counts = fan_in_counts(layer.mask)
            active = counts[counts > 0]
            assert active.numel() > 0 and int(active.min()) == int(active.max())  # one fan-in per layer
            assert int(layer.mask.sum()) <= layer.k
            assert int(active[0]) == layer.k // active.numel()  # the whole budget that divides evenly
    assert len(h.engine.records) == 2  # after iterations 2 and 4 (< T_end = int(0.75 * 8) = 6)


def test_one_epoch_smoke_run_reports_the_fan_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    overrides = {"method": "srigl", "epochs": 1, "out": str(out), "synthetic_train_samples": 256}
    summary = train(resolve_config("quick", overrides=overrides, hp={"delta_t": 1}), progress=False)
    assert summary["topology_updates"] == 2  # after iterations 1 and 2 of 4 (< T_end = int(0.75 * 4) = 3)
    reported = summary["method_report"]["fan_in"]
    inspected = inspect_run(out)
    for layer in inspected["layers"]:
        assert layer["fan_in_min"] == layer["fan_in_max"] == reported[layer["name"]]["min"]
        assert layer["active"] <= layer["target_active"]
    assert "fan-in" in render_inspection(inspected)
    assert json.loads((out / "summary.json").read_text())["needs"]["density_policy"] == "at_most"
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=0.02)
    # The prediction starts (and, under at_most, ends) at the constant-fan-in counts.
    assert main(["flops", "--model", "tiny_cnn", "--input-size", "32", "--num-classes", "10", "--sparsity", "0.9",
                 "--distribution", "erk", "--method", "srigl", "--epochs", "1", "--train-samples", "256",
                 "--batch-size", "64", "--hp", "delta_t=1", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["train_flops"] == pytest.approx(summary["flops"]["train_flops"], rel=0.02)
    assert predicted["inference_flops"] == pytest.approx(summary["flops"]["inference_flops"], rel=0.02)


# -- the released script's behaviour (issue 20, item 3) ----------------------------------------------
class HeadFirst(nn.Module):
    """A model whose classifier is registered *before* its hidden layer, and says so (timm's API)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3, bias=False)
        self.body = nn.Linear(6, 8, bias=False)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.body(x)))


def _head_first_engine(hp: dict[str, object], lr: float = 0.0) -> SparseEngine:
    torch.manual_seed(0)
    model = HeadFirst()
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    engine = SparseEngine(model, plan, create_updater("srigl", {"delta_t": 10, "gamma_sal": 0.6, **hp}), optimizer, steps_per_epoch=10, total_epochs=10)
    engine.initialize()
    return engine


def _weak_classifier_neuron(engine: SparseEngine) -> None:
    """fc's neuron 2 gets tiny weights and no gradient: nothing about it is salient."""
    fc = next(layer for layer in engine.sparse_layers if layer.name == "fc")
    with torch.no_grad():
        fc.weight.copy_(torch.rand(fc.weight.shape, generator=torch.Generator().manual_seed(1)) + 0.5)
        fc.weight[2] = 1e-4
        fc.weight.mul_(fc.mask)
    fc.weight.grad = torch.rand(fc.weight.shape, generator=torch.Generator().manual_seed(2))
    fc.weight.grad[2] = 0.0
    body = next(layer for layer in engine.sparse_layers if layer.name == "body")
    body.weight.grad = torch.ones_like(body.weight)


def test_the_classifier_comes_from_the_model_and_is_not_ablated_by_default() -> None:
    """The released configs name the classifier in ``no_ablation_module_names``; the model names it
    here (``get_classifier()``), not the registration order, whose last layer is ``body``."""
    engine = _head_first_engine({})
    assert engine.updater.report()["output_layer"] == {"name": "fc", "from": "the model's classifier", "ablated": False}
    _weak_classifier_neuron(engine)
    step_engine(engine, 9)
    fc = next(layer for layer in engine.sparse_layers if layer.name == "fc")
    assert fan_in_counts(fc.mask).tolist() == [4, 4, 4]  # K = 12 over 3 neurons, none ablated


def test_ablate_output_layer_ablates_the_classifier_as_the_code_does_when_nothing_is_named() -> None:
    engine = _head_first_engine({"ablate_output_layer": True})
    _weak_classifier_neuron(engine)
    step_engine(engine, 9)
    fc = next(layer for layer in engine.sparse_layers if layer.name == "fc")
    assert fan_in_counts(fc.mask).tolist() == [6, 6, 0]  # its fan-in moves to the two others


def test_rigl_torch_schedule_and_drop_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RigLScheduler.__call__``: after iteration i with i % delta_t == 0 and i < T_end = int(0.75 T),
    fraction alpha/2 (1 + cos(pi i / T_end)); the optimizer step is taken on mask steps too."""
    from dstbench.methods.rigl import RigL

    seen: list[tuple[int, float]] = []
    original = RigL.drop_fraction_at

    def recorded(self: RigL, ctx: object) -> float:
        fraction = float(original(self, ctx))  # type: ignore[arg-type]
        seen.append((ctx.info.step, fraction))  # type: ignore[attr-defined]
        return fraction

    monkeypatch.setattr(RigL, "drop_fraction_at", recorded)
    engine = _head_first_engine({}, lr=0.1)
    model = engine.model
    for step in range(100):
        model(torch.randn(4, 6)).sum().backward()
        engine.step(step)
        engine.optimizer.zero_grad()  # type: ignore[union-attr]
    updates = [i for i in range(1, 101) if i % 10 == 0 and i < 75]
    assert [step for step, _ in seen] == [i - 1 for i in updates] == [9, 19, 29, 39, 49, 59, 69]
    assert [f for _, f in seen] == pytest.approx([0.15 * (1 + math.cos(math.pi * i / 75)) for i in updates], abs=1e-12)
    assert engine.skipped_steps == 0  # train_rigl.py: optimizer step, then pruner(), every iteration


def test_todays_behaviour_stays_available_as_named_switches() -> None:
    """RigL's schedule (first update after step 0) and TF's skipped optimizer step on mask steps."""
    hp: dict[str, object] = {"rigl_torch_schedule": False, "skip_weight_update_on_mask_step": True}
    engine = _head_first_engine(hp, lr=0.1)
    assert engine.update_due(0)
    engine.model(torch.randn(4, 6)).sum().backward()
    engine.step(0)
    assert engine.skipped_steps == 1 and len(engine.records) == 1
