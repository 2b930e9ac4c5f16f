"""Engine invariants: exact counts, zeros off the mask (weights and any optimizer state), zero-init
growth, seeded randomness, topology records."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dstbench.engine.sparse_engine import MaskInvariantError
from dstbench.core.registry import create_updater
from dstbench.core.updater import MaskUpdater, Needs, StepInfo, UpdateContext, random_mask

from .helpers import make_harness


def test_every_prunable_weight_gets_a_persistent_bool_mask() -> None:
    h = make_harness(create_updater("static"))
    state = h.model.state_dict()
    assert {k for k in state if k.endswith("weight_mask")} == {"conv.weight_mask", "conv2.weight_mask", "fc.weight_mask"}
    assert all(state[k].dtype == torch.bool for k in state if k.endswith("weight_mask"))
    assert "bn.weight_mask" not in state  # norms are never masked


def test_grown_weights_and_their_state_start_at_zero() -> None:
    h = make_harness(create_updater("set", {"zeta": 0.5}), 0.5, steps_per_epoch=3, epochs=3)
    for step in range(2):
        h.step(step)
    before = {layer.name: layer.mask.clone() for layer in h.engine.sparse_layers}
    h.step(2)  # end of epoch 0: SET updates
    assert len(h.engine.records) == 1
    for layer in h.engine.sparse_layers:
        grown = layer.mask & ~before[layer.name]
        assert grown.any()
        assert bool((layer.weight[grown] == 0).all())
        momentum = h.optimizer.state[layer.weight]["momentum_buffer"]
        assert bool((momentum[grown] == 0).all())
        assert bool((momentum[~layer.mask] == 0).all())


def test_dense_method_keeps_everything() -> None:
    h = make_harness(create_updater("dense"), 0.9)
    assert h.engine.sparse_layers == []
    h.step(0)
    assert all(int(layer.mask.sum()) == layer.numel for layer in h.engine.layers)


def test_masks_are_reproducible_from_the_seed() -> None:
    def final_masks(seed: int) -> list[torch.Tensor]:
        h = make_harness(create_updater("set"), 0.7, seed=seed, steps_per_epoch=2, epochs=3)
        for step in range(6):
            h.step(step)
        return [layer.mask.clone() for layer in h.engine.sparse_layers]

    a, b, c = final_masks(0), final_masks(0), final_masks(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_topology_record_counts_and_iou() -> None:
    h = make_harness(create_updater("set", {"zeta": 0.3}), 0.5, steps_per_epoch=2, epochs=2)
    h.step(0)
    before = {layer.name: layer.mask.clone() for layer in h.engine.sparse_layers}
    h.step(1)
    (record,) = h.engine.records
    assert record.step == 2 and record.epoch == 1
    for layer in h.engine.sparse_layers:
        change = record.layers[layer.name]
        assert change.grown == int((layer.mask & ~before[layer.name]).sum())
        assert change.dropped == change.grown
        assert change.active == layer.k
    inter = sum(int((layer.mask & before[layer.name]).sum()) for layer in h.engine.sparse_layers)
    union = sum(int((layer.mask | before[layer.name]).sum()) for layer in h.engine.sparse_layers)
    assert record.iou == pytest.approx(inter / union)
    assert 0 < record.iou < 1


@dataclass
class _Broken(MaskUpdater):
    """Returns one weight too many at its first update."""

    def is_update_step(self, info: StepInfo) -> bool:
        return info.step == 0

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        layer = ctx.sparse_layers[0]
        return {layer.name: random_mask(layer.weight.shape, layer.k + 1, ctx.rng)}


@dataclass
class _Overgrow(_Broken):
    @property
    def needs(self) -> Needs:
        return Needs(density_policy="at_least")


def test_engine_rejects_wrong_counts_unless_declared() -> None:
    h = make_harness(_Broken(), 0.5)
    with pytest.raises(MaskInvariantError, match="target"):
        h.step(0)
    h = make_harness(_Overgrow(), 0.5)
    h.step(0)
    layer = h.engine.sparse_layers[0]
    assert int(layer.mask.sum()) == layer.k + 1
    assert h.engine.violations() == []


def test_itop_rate_counts_every_weight_ever_active() -> None:
    h = make_harness(create_updater("set", {"zeta": 0.5}), 0.8, steps_per_epoch=1, epochs=5)
    start = h.engine.itop_rate()
    assert start == pytest.approx(
        sum(layer.k for layer in h.engine.sparse_layers) / sum(layer.numel for layer in h.engine.sparse_layers)
    )
    for step in range(4):
        h.step(step)
    assert h.engine.itop_rate() > start


def test_step_info_epoch_boundaries() -> None:
    info = StepInfo(step=-1, steps_per_epoch=10, total_epochs=4)
    assert info.boundary == 0 and info.epoch == 0 and info.next_epoch == 0
    assert StepInfo(step=19, steps_per_epoch=10, total_epochs=4).next_epoch == 2
    assert StepInfo(step=19, steps_per_epoch=10, total_epochs=4).epoch == 1
    assert StepInfo(step=39, steps_per_epoch=10, total_epochs=4).next_epoch == 4
