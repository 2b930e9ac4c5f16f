"""Contract v2 in the engine: scheduled layer targets, grown values, backward sets, and the cost model
charging what really happens (a GraNet-style plugin predicted within 2 % of its recorded run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dstbench.cli.app import main
from dstbench.config import resolve_config
from dstbench.engine.sparse_engine import MaskInvariantError
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask
from dstbench.train.loop import train
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext
from tests.helpers import make_harness

SMALL = {"synthetic_train_samples": 256, "synthetic_test_samples": 64, "batch_size": 32, "epochs": 4}


def test_granet_style_plugin_follows_its_schedule_and_flops_prediction_matches_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = resolve_config("quick", None, {**SMALL, "method": "gradual-regrow", "out": str(tmp_path / "run")},
                         {"delta_t": 4, "initial_sparsity": 0.5})
    summary = train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "topology.jsonl").read_text().splitlines()]
    # 8 steps/epoch x 4 epochs: updates at boundaries 4, 8, ..., 24 (prune_end 0.75); the counts shrink
    # every time until the last update, which reaches the plan (checked by the engine at each update).
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20, 24]
    actives = [r["active"] for r in records]
    assert actives == sorted(actives, reverse=True) and len(set(actives)) == len(actives)
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=2e-3)
    assert all(r["turnover"] < 1 - r["iou"] for r in records)  # shrinking is not exploration

    assert main(["flops", "--model", "tiny_cnn", "--input-size", "32", "--num-classes", "10", "--sparsity", "0.9",
                 "--distribution", "erk", "--method", "gradual-regrow", "--epochs", "4", "--train-samples", "256",
                 "--batch-size", "32", "--hp", "delta_t=4", "--hp", "initial_sparsity=0.5", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    recorded = summary["flops"]
    assert predicted["train_flops"] == pytest.approx(recorded["train_flops"], rel=0.02)
    assert predicted["inference_flops"] == pytest.approx(recorded["inference_flops"], rel=1e-9)  # final masks


@dataclass
class _Shrink(MaskUpdater):
    """Scheduled policy: halve every layer's excess over the plan at each update, from a dense start."""

    wrong: bool = False

    @property
    def needs(self) -> Needs:
        return Needs(density_policy="scheduled")

    def schedule(self) -> Periodic:
        return Periodic(5, stop=0.5)

    def layer_targets(self, info: StepInfo, layers: list[MaskedLayer]) -> dict[str, int]:
        updates_done = max(info.boundary, 0) // 5
        return {layer.name: layer.k + (layer.numel - layer.k) // 2 ** (updates_done + 1) * (updates_done < 2) for layer in layers}

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        targets = self.layer_targets(ctx.info, ctx.sparse_layers)
        return {
            layer.name: topk_mask(layer.weight.detach().abs(), targets[layer.name] + int(self.wrong), eligible=layer.mask, prefer=layer.mask)
            for layer in ctx.sparse_layers
        }


def test_scheduled_counts_are_checked_at_every_update_and_at_the_end() -> None:
    h = make_harness(_Shrink(), 0.8, steps_per_epoch=5, epochs=4)
    counts = [{layer.name: int(layer.mask.sum()) for layer in h.engine.sparse_layers}]
    assert h.engine.violations() == []  # against the initial scheduled counts, not the plan
    assert h.engine.violations(final=True)  # far from the plan before training
    for step in range(20):
        h.step(step)
        assert h.engine.violations() == []
    counts.append({layer.name: int(layer.mask.sum()) for layer in h.engine.sparse_layers})
    assert all(counts[1][layer.name] == layer.k for layer in h.engine.sparse_layers)
    assert h.engine.violations(final=True) == []
    with pytest.raises(MaskInvariantError, match=r"target \d+ \(scheduled\)"):
        bad = make_harness(_Shrink(wrong=True), 0.8, steps_per_epoch=5, epochs=4)
        for step in range(5):
            bad.step(step)


@dataclass
class _GrowWithValues(MaskUpdater):
    """Swap the smallest active weight for the first inactive one, which starts at 0.25."""

    def schedule(self) -> Periodic:
        return Periodic(2)

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        masks = {}
        for layer in ctx.sparse_layers:
            keep = topk_mask(layer.weight.detach().abs(), layer.k - 1, eligible=layer.mask, prefer=layer.mask)
            grow = topk_mask(torch.zeros_like(layer.weight), 1, eligible=~layer.mask)
            masks[layer.name] = keep | grow
            ctx.grown_values[layer.name] = torch.full_like(layer.weight, 0.25)
        return masks


def test_grown_entries_start_at_the_values_the_method_supplies() -> None:
    h = make_harness(_GrowWithValues(), 0.8, steps_per_epoch=5, epochs=2)
    before = {layer.name: (layer.mask.clone(), layer.weight.detach().clone()) for layer in h.engine.sparse_layers}
    h.step(0)
    h.step(1)  # update after step 1
    for layer in h.engine.sparse_layers:
        old_mask, _ = before[layer.name]
        grown = layer.mask & ~old_mask
        assert int(grown.sum()) == 1 and float(layer.weight.detach()[grown]) == 0.25
        state = h.optimizer.state[layer.weight]["momentum_buffer"]
        assert float(state[grown]) == 0.0
    assert h.engine.violations() == []


@dataclass
class _ForwardPlusReserve(MaskUpdater):
    """A Top-KAST-like backward set: B = the mask plus the largest inactive |theta| (as many again)."""

    @property
    def needs(self) -> Needs:
        return Needs(dense_grad="every_step", backward_set=True)

    def schedule(self) -> Periodic:
        return Periodic(3)

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        return {layer.name: topk_mask(layer.weight.detach().abs(), layer.k, eligible=ctx.backward_mask(layer),
                                      prefer=layer.mask) for layer in ctx.sparse_layers}

    def backward_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        out = {}
        for layer in ctx.sparse_layers:
            extra = min(layer.k, layer.numel - layer.k)
            scores = layer.weight.detach().abs() + ctx.uniform(layer.weight) * 1e-6
            out[layer.name] = layer.mask | topk_mask(scores, extra, eligible=~layer.mask)
        return out


def test_backward_set_trains_b_while_the_forward_pass_sees_only_the_mask() -> None:
    h = make_harness(_ForwardPlusReserve(), 0.8, steps_per_epoch=5, epochs=2)
    layer = h.engine.sparse_layers[0]
    backward = h.engine.backward_masks()[layer.name]
    outside = backward & ~layer.mask
    assert int(outside.sum()) == layer.k and h.engine.violations() == []
    reserve_before = layer.module.weight_reserve.clone()  # type: ignore[union-attr]
    h.step(0)
    reserve = layer.module.weight_reserve  # type: ignore[union-attr]
    # B - M was trained (it started at 0: the reserve now holds the first SGD step of those weights) ...
    assert bool((reserve[outside] != reserve_before[outside]).any())
    # ... while the weight the forward pass uses is still exactly zero off M, and the state off B.
    assert float(layer.weight.detach()[~layer.mask].abs().max()) == 0.0
    assert float(h.optimizer.state[layer.weight]["momentum_buffer"][~backward].abs().max()) == 0.0
    for step in range(1, 10):
        h.step(step)
        assert h.engine.violations() == []
    assert len(h.engine.records) == 3
    densities = h.engine.backward_densities()
    assert densities is not None and densities[layer.name] == pytest.approx(2 * layer.k / layer.numel)


@dataclass
class _ReserveFromTheStart(_ForwardPlusReserve):
    """The same sets, also refreshed before the first step (an update at step -1)."""

    def schedule(self) -> Periodic:
        return Periodic(3, at_start=True)


def test_an_update_before_training_keeps_the_backward_set_aside() -> None:
    h = make_harness(_ReserveFromTheStart(), 0.8, steps_per_epoch=5, epochs=2)
    assert len(h.engine.records) == 1 and h.engine.records[0].step == 0
    assert h.engine.violations() == []  # the forward weights are zero off M before the first step
    for step in range(4):
        h.step(step)
        assert h.engine.violations() == []


def test_set_grow_init_draws_grown_weights_from_the_init_distribution() -> None:
    from dstbench.core.registry import create_updater

    h = make_harness(create_updater("set", {"grow_init": "init_dist"}), 0.8, steps_per_epoch=2, epochs=3)
    before = {layer.name: layer.mask.clone() for layer in h.engine.sparse_layers}
    h.step(0)
    h.step(1)  # the end of epoch 0: SET's update
    for layer in h.engine.sparse_layers:
        grown = layer.mask & ~before[layer.name]
        values = layer.weight.detach()[grown]
        bound = 1 / layer.weight[0].numel() ** 0.5
        assert grown.any() and bool((values != 0).all()) and float(values.abs().max()) <= bound
    assert h.engine.violations() == []


@dataclass
class _OldHooks(MaskUpdater):
    """A 0.2 plugin: schedule() as a method, bind(engine), skips_optimizer_step, after_step."""

    bound: bool = False

    @property
    def needs(self) -> Needs:
        return Needs(per_step_hook=True)

    def schedule(self) -> Periodic:  # type: ignore[override]
        return Periodic(2)

    def bind(self, engine: object) -> None:
        self.bound = True

    def skips_optimizer_step(self, info: StepInfo) -> bool:
        return True

    def after_step(self, ctx: UpdateContext) -> None:
        self._after = getattr(self, "_after", 0) + 1


def test_old_hooks_still_work_with_one_warning_per_hook_and_class() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = make_harness(_OldHooks(), 0.5, steps_per_epoch=4, epochs=2)
        for step in range(8):
            h.step(step)
    method = h.engine.updater
    assert method.bound and method._after == 8  # type: ignore[attr-defined]
    assert h.engine.skipped_steps == len(h.engine.records) - 0 > 0  # every update step skipped its optimizer step
    hooks = [str(w.message).split(" ")[0] for w in caught if issubclass(w.category, DeprecationWarning) and "_OldHooks." in str(w.message)]
    assert sorted(hooks) == sorted(f"_OldHooks.{hook}" for hook in ("schedule", "bind", "skips_optimizer_step", "after_step"))
