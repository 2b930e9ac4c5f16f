"""FLOP accounting (RigL, Evci et al. 2020, Appendix H): known answers for ResNet-50 and RigL, per-layer counts from real shapes,
and the per-step cost of every ``Needs.dense_grad`` kind, including densities that change in a run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.analysis.flops import (
    DensityPhase,
    ForwardFlops,
    LayerFlops,
    TrainingSchedule,
    count_forward_flops,
    density_timeline,
    forward_report,
    initial_active,
    plan_active,
    predict_flops,
    run_flops,
    training_flops,
)
from dstbench.cli.app import main
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.core.updater import MaskUpdater, Needs, StepInfo, UpdateContext

from .helpers import SmallNet, make_harness

IMAGENET = 1_281_167


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One batch-1 forward gains little from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning makes it several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet50() -> tuple[nn.Module, ForwardFlops]:
    """timm's ResNet-50 (v1.5) and its forward FLOPs at 224x224: built and counted once per module."""
    model = timm.create_model("resnet50")
    return model, count_forward_flops(model, 224)


def _f_s(model: nn.Module, forward: ForwardFlops, sparsity: float, dense_layers: str) -> float:
    plan = plan_sparsity(describe_layers(model), sparsity, "uniform", dense_layers)
    return float(forward_report(forward, plan_active(plan))["sparse_forward_flops"])


def test_resnet50_forward_flops_known_answers(resnet50: tuple[nn.Module, ForwardFlops]) -> None:
    model, forward = resnet50
    assert round(forward.dense, -7) == 8.18e9  # 8.178e9 under this accountant's conventions
    assert forward.dense == pytest.approx(8.178e9, rel=1e-4)
    assert forward.layers[0].name == "conv1" and forward.layers[0].dense == pytest.approx(0.236e9, rel=1e-3)
    assert round(_f_s(model, forward, 0.8, "none"), -7) == 1.64e9  # Table 2's all-sparse "1.7e9" minus elementwise ops
    assert round(_f_s(model, forward, 0.8, "first"), -7) == 1.82e9  # conv1 dense (RigL's ImageNet convention)
    assert round(_f_s(model, forward, 0.9, "none"), -7) == 0.82e9


def test_rigl_resnet50_training_flops(resnet50: tuple[nn.Module, ForwardFlops]) -> None:
    """RigL's ImageNet setting: batch 4096 -> 313 steps/epoch, 31,300 steps, ΔT = 100, T_end = 75 %."""
    model, forward = resnet50
    plan = plan_sparsity(describe_layers(model), 0.8, "uniform", "first")
    result = predict_flops(
        forward, model, plan, create_updater("rigl"),
        epochs=100, train_samples=IMAGENET, batch_size=4096, input_size=224,
    )
    assert (result["steps"], result["mask_updates"]) == (31_300, 235)  # t = 0, 100, ..., 23,400 <= 23,475
    f_s, f_d = result["sparse_forward_flops"], result["dense_forward_flops"]
    per_step = (3 * f_s * (31_300 - 235) + 235 * (2 * f_s + f_d)) / 31_300
    assert result["train_flops"] == pytest.approx(per_step * IMAGENET * 100, rel=1e-12)
    assert round(result["train_flops"], -16) == 0.71e18  # RigL paper: about 0.23 x 3.2e18; this cost model: 0.708e18
    assert result["dense_train_flops"] == pytest.approx(3.14e18, rel=2e-3)


def test_static_resnet50_training_flops_is_three_forward_passes(resnet50: tuple[nn.Module, ForwardFlops]) -> None:
    model, forward = resnet50
    plan = plan_sparsity(describe_layers(model), 0.8, "uniform", "none")
    phases = [DensityPhase(0, plan_active(plan))]
    schedule = TrainingSchedule(total_steps=100 * 1252, samples=IMAGENET * 100, update_steps=())
    cost = training_flops(forward, create_updater("static").needs, phases, schedule, None)
    assert cost == pytest.approx(3 * _f_s(model, forward, 0.8, "none") * IMAGENET * 100, rel=1e-12)
    assert round(cost, -16) == 0.63e18  # static, all layers sparse: 0.629e18


def test_flops_cli_json_reports_the_rigl_known_answer(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flops", "--model", "resnet50", "--input-size", "224", "--sparsity", "0.8", "--dense-layers", "first"]
    argv += ["--method", "rigl", "--epochs", "100", "--train-samples", str(IMAGENET), "--batch-size", "4096", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert round(result["dense_forward_flops"], -7) == 8.18e9
    assert round(result["sparse_forward_flops"], -7) == 1.82e9
    assert round(result["train_flops"], -16) == 0.71e18
    assert result["num_classes"] == 1000 and result["batch_size"] == 4096
    conv1 = result["layers"]["conv1"]
    assert conv1["density"] == 1.0 and conv1["sparse_flops"] == conv1["dense_flops"]
    fc = result["layers"]["fc"]
    assert fc["dense_flops"] == 2 * 2048 * 1000
    assert fc["sparse_flops"] == pytest.approx(fc["dense_flops"] * fc["density"])
    assert fc["density"] == pytest.approx(0.2, abs=1e-6)


def test_layer_flops_come_from_real_output_shapes() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True),  # 8 x 4 x 4 outputs, fan-in 27
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # depthwise-ish: fan-in 2*9
        nn.Flatten(),
        nn.Linear(128, 5),
    )
    forward = count_forward_flops(model, 8)
    assert [layer.dense for layer in forward.layers] == [2 * 128 * 27, 2 * 128 * 18, 2 * 5 * 128]
    assert [layer.numel for layer in forward.layers] == [8 * 27, 8 * 18, 5 * 128]
    model.train()
    counted = count_forward_flops(model, 8)
    assert model.training and counted == forward  # mode restored, hooks removed (no double counting)


def test_counting_leaves_batchnorm_statistics_alone() -> None:
    model = SmallNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_forward_flops(model, 5, in_chans=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- per-step cost of each Needs kind, on a crafted two-layer model (f_D = 400) --------------------------
FORWARD = ForwardFlops((LayerFlops("a", 10, 100.0), LayerFlops("b", 20, 300.0)))
HALF_A = [DensityPhase(0, {"a": 5, "b": 20})]  # f_S = 50 + 300 = 350


def _schedule(updates: tuple[int, ...] = ()) -> TrainingSchedule:
    return TrainingSchedule(total_steps=10, samples=40, update_steps=updates)


def test_cost_never_is_three_sparse_passes() -> None:
    assert training_flops(FORWARD, Needs(), HALF_A, _schedule(), None) == 40 * 3 * 350


def test_cost_update_steps_pays_a_dense_weight_gradient_only_when_the_schedule_fires() -> None:
    cost = training_flops(FORWARD, Needs(dense_grad="update_steps"), HALF_A, _schedule((0, 5)), None)
    assert cost == 4 * (8 * 3 * 350 + 2 * (2 * 350 + 400))


def test_cost_every_step_uses_the_declared_gradient_density() -> None:
    needs = Needs(dense_grad="every_step")
    assert training_flops(FORWARD, needs, HALF_A, _schedule(), None) == 40 * (2 * 350 + 400)
    assert training_flops(FORWARD, needs, HALF_A, _schedule(), {"a": 0.8}) == 40 * (2 * 350 + 80 + 300)


def test_dense_training_is_three_dense_passes() -> None:
    dense = [DensityPhase(0, {"a": 10, "b": 20})]
    assert training_flops(FORWARD, Needs(sparse=False), dense, _schedule(), None) == 40 * 3 * 400


def test_time_varying_density_is_integrated_over_phases() -> None:
    phases = [DensityPhase(0, {"a": 5}), DensityPhase(4, {"a": 10}), DensityPhase(4, {"a": 2})]
    # Steps 0-3 at f_S = 350; the second phase at step 4 is replaced at once (length 0); 4-9 at 320.
    assert training_flops(FORWARD, Needs(), phases, _schedule(), None) == 4 * (4 * 3 * 350 + 6 * 3 * 320)
    # A dense-gradient step is charged against the density in force at that step.
    cost = training_flops(FORWARD, Needs(dense_grad="update_steps"), phases, _schedule((3, 4)), None)
    assert cost == 4 * (4 * 3 * 350 + 6 * 3 * 320 + (400 - 350) + (400 - 320))


@settings(max_examples=30, deadline=None)
@given(
    delta_t=st.integers(1, 200),
    periods=st.integers(1, 20),
    f_s=st.floats(1.0, 1e9),
    extra=st.floats(0.0, 1e9),
)
def test_rigl_formula_is_the_average_of_per_step_costs(delta_t: int, periods: int, f_s: float, extra: float) -> None:
    """One dense-gradient step per ΔT+1 steps gives RigL's (3 f_S ΔT + 2 f_S + f_D)/(ΔT + 1) per step."""
    # Layer "s" always dense (f_S = f_s), layer "x" empty: it only costs in a dense gradient.
    forward = ForwardFlops((LayerFlops("s", 1, f_s), LayerFlops("x", 1, extra)))
    f_d = forward.dense
    total = (delta_t + 1) * periods
    schedule = TrainingSchedule(total, total, tuple(range(0, total, delta_t + 1)))
    cost = training_flops(forward, Needs(dense_grad="update_steps"), [DensityPhase(0, {"x": 0})], schedule, None)
    assert cost / total == pytest.approx((3 * f_s * delta_t + 2 * f_s + f_d) / (delta_t + 1), rel=1e-9)


# -- a run's own FLOPs ------------------------------------------------------------------------------------
def test_run_flops_of_a_set_run_matches_three_sparse_passes() -> None:
    h = make_harness(create_updater("set", {"zeta": 0.5}), 0.8, steps_per_epoch=2, epochs=3)
    init = {layer.name: int(layer.mask.sum()) for layer in h.engine.layers}
    for step in range(6):
        h.step(step)
    assert len(h.engine.records) == 2
    assert initial_active(h.engine.layers, h.engine.records) == init
    result = run_flops(h.engine, 5, train_samples=16, in_chans=2)
    forward = count_forward_flops(h.model, 5, in_chans=2)
    f_s = forward.at(forward.densities(init))
    assert result["train_flops"] == pytest.approx(3 * f_s * 16 * 3, rel=1e-12)
    assert result["inference_flops"] == pytest.approx(f_s, rel=1e-12)
    assert result["dense_train_flops"] == pytest.approx(3 * forward.dense * 48, rel=1e-12)


@dataclass
class _GrowOnce(MaskUpdater):
    """Adds one weight to the first layer after step 1 (density_policy "at_least", like MEST+EM&S)."""

    @property
    def needs(self) -> Needs:
        return Needs(density_policy="at_least")

    def is_update_step(self, info: StepInfo) -> bool:
        return info.step == 1

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        layer = ctx.sparse_layers[0]
        mask = layer.mask.clone().flatten()
        mask[int(torch.nonzero(~mask)[0])] = True
        return {layer.name: mask.view_as(layer.mask)}


def test_run_flops_integrates_a_density_that_changes_during_the_run() -> None:
    h = make_harness(_GrowOnce(), 0.8, steps_per_epoch=2, epochs=3)
    before = {layer.name: int(layer.mask.sum()) for layer in h.engine.layers}
    for step in range(6):
        h.step(step)
    after = {layer.name: int(layer.mask.sum()) for layer in h.engine.layers}
    first = h.engine.sparse_layers[0].name
    assert after[first] == before[first] + 1
    phases = density_timeline(initial_active(h.engine.layers, h.engine.records), h.engine.records)
    assert [p.start for p in phases] == [0, 2] and phases[0].active == before and phases[1].active == after
    forward = count_forward_flops(h.model, 5, in_chans=2)
    f_before = forward.at(forward.densities(before))
    f_after = forward.at(forward.densities(after))
    result = run_flops(h.engine, 5, train_samples=16, in_chans=2)
    assert result["train_flops"] == pytest.approx(16 * 3 / 6 * (2 * 3 * f_before + 4 * 3 * f_after), rel=1e-12)
    assert result["inference_flops"] == pytest.approx(f_after, rel=1e-12)
