"""The recipe options: EMA masked like the model and resumed bit for bit, mixup/cutmix seeded per batch,
RandAugment/TrivialAugment batched on the device with torchvision's ops, each recorded in the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.auto_augment import apply_policy, draw_policy, policy_transform
from dstbench.config import TrainConfig, resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.rundir import RunDir
from dstbench.train.loop import train
from dstbench.train.optimizers import build_optimizer
from dstbench.train.recipes import Recipe
from tests.helpers import SmallNet
from tests.kill import train_until_interrupted
from tests.test_methods_contract import _batch, fast_hp

RECIPE = {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "ema": 0.9, "auto_augment": "trivialaugment"}
SMALL = {"synthetic_train_samples": 72, "synthetic_test_samples": 32, "batch_size": 16, "epochs": 3}


@pytest.mark.parametrize("method", ["rigl", "set", "snfs", "top-kast"])
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16), decay=st.sampled_from([0.5, 0.9, 0.999]))
def test_ema_weights_stay_zero_off_the_mask(method: str, seed: int, decay: float) -> None:
    torch.manual_seed(seed)
    model = SmallNet(5, 6)
    optimizer = build_optimizer(model, TrainConfig(opt="adamw", lr=0.01))
    updater = create_updater(method, fast_hp(method))
    engine = SparseEngine(model, plan_sparsity(describe_layers(model), 0.8, "uniform", "none"), updater, optimizer,
                          seed=seed, steps_per_epoch=4, total_epochs=3)  # fmt: skip
    engine.initialize()
    recipe = Recipe(ema_decay=decay)
    recipe.attach(model)
    recipe.start(model)
    assert recipe.ema is not None
    ema_layers = {name: module for name, module in recipe.ema.module.named_modules()}
    for step in range(12):
        x, y = _batch(seed + step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        engine.step(step, (x, y))
        optimizer.zero_grad(set_to_none=True)
        recipe.after_step(model)
        for layer in engine.sparse_layers:
            ema_weight = ema_layers[layer.name].weight.detach()
            assert not ema_weight[~layer.mask].any(), f"{method} step {step}: EMA of {layer.name} off the mask"
            assert torch.equal(ema_layers[layer.name].weight_mask, layer.mask)
        assert any(ema_layers[layer.name].weight.detach()[layer.mask].any() for layer in engine.sparse_layers)


def _files(run: Path) -> dict[str, Any]:
    state = RunDir(run).load_checkpoint("cpu")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "model": {k: v.numpy().tobytes() for k, v in state["model"].items()},
        "ema": {k: v.numpy().tobytes() for k, v in state["ema"].items()},
        "optimizer": [{k: v.numpy().tobytes() for k, v in s.items() if isinstance(v, torch.Tensor)}
                      for s in state["optimizer"]["state"].values()],  # fmt: skip
        "metrics": [{k: v for k, v in row.items() if "seconds" not in k} for row in metrics],
    }


def test_a_resumed_run_with_every_recipe_is_bit_identical(tmp_path: Path) -> None:
    def config(name: str) -> TrainConfig:
        fields = {**SMALL, **RECIPE, "opt": "lamb", "lr": 0.01, "method": "rigl", "out": str(tmp_path / name)}
        return resolve_config("quick", None, fields, fast_hp("rigl", 2))

    summary = train(config("reference"), progress=False)
    assert 0.0 <= summary["ema_test_acc"] <= 1.0
    train_until_interrupted(config("killed"), after_checkpoint=1)
    train(config("killed"), resume=True, progress=False)
    reference, resumed = _files(tmp_path / "reference"), _files(tmp_path / "killed")
    assert resumed == reference
    assert all("ema_test_acc" in row for row in reference["metrics"])
    saved = json.loads((tmp_path / "reference" / "config.json").read_text())
    assert {key: saved["optim"][key] for key in ("opt", "mixup", "cutmix", "label_smoothing", "ema")} == {
        "opt": "lamb", "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "ema": 0.9}  # fmt: skip
    assert saved["data"]["auto_augment"] == "trivialaugment"


def test_mixing_is_seeded_per_batch_and_leaves_numpy_alone() -> None:
    recipe = Recipe.build(TrainConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1, seed=3), num_classes=4)
    x, y = torch.randn(7, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1, 2])  # odd: timm's own call asserts even
    np.random.seed(11)
    before = np.random.get_state()[1].copy()
    first = recipe.mix(x.clone(), y, epoch=2, micro=5)
    assert np.array_equal(np.random.get_state()[1], before)
    again = recipe.mix(x.clone(), y, epoch=2, micro=5)
    other = recipe.mix(x.clone(), y, epoch=2, micro=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert torch.allclose(first[1].sum(1), torch.ones(7)) and first[1].shape == (7, 4)
    assert first[1].min() >= 0.1 / 4 - 1e-7  # smoothing carried by the mixed targets
    loss = recipe.criterion()
    logits = torch.randn(7, 4)
    assert torch.equal(loss(logits, first[1]), torch.sum(-first[1] * logits.log_softmax(-1), -1).mean())
    assert torch.equal(loss(logits, y), torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1))
    assert Recipe.build(TrainConfig(), 4).mix(x, y, 0, 0) == (x, y)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_batched_policy_applies_torchvisions_op_to_each_image(policy: str) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=gen)
    draws = draw_policy(policy, 24, gen)
    out = apply_policy(policy, images, draws)
    transform = policy_transform(policy)
    names = list(transform._AUGMENTATION_SPACE)
    assert draws.ops.shape == ((2, 24) if policy == "randaugment" else (1, 24))
    for i in range(24):  # image by image, through torchvision's own op: the same pixels
        expected = images[i : i + 1]
        for r in range(draws.ops.shape[0]):
            name = names[int(draws.ops[r, i])]
            fn, signed = transform._AUGMENTATION_SPACE[name]
            mags = fn(transform.num_magnitude_bins, 16, 16)
            mag = 0.0 if mags is None else float(mags[int(draws.bins[r, i])]) * (-1 if signed and bool(draws.negate[r, i]) else 1)
            if name != "Identity":
                expected = transform._apply_image_or_video_transform(expected, name, mag, interpolation=transform.interpolation, fill=transform._fill)
        assert torch.equal(out[i : i + 1], expected), f"image {i}"
    assert not torch.equal(out, images)


def test_auto_augment_needs_augment_and_is_refused_on_ffcv() -> None:
    from dstbench.data import DataConfig, build_data

    with pytest.raises(ConfigError, match="^--auto-augment randaugment follows the crop and flip: it needs --augment"):
        build_data(DataConfig(dataset="synthetic", augment=False, auto_augment="randaugment"), torch.device("cpu"))

    cfg = DataConfig(dataset="synthetic", loader="ffcv", auto_augment="randaugment")
    with pytest.raises(ConfigError, match="^--auto-augment randaugment is not implemented on --loader ffcv"):
        build_data(cfg, torch.device("cpu"))


def test_the_loaders_apply_the_policy_seeded_and_only_when_asked() -> None:
    from data.streaming import imagenet_transform
    from torchvision.transforms import v2

    from dstbench.data import DataConfig, build_data

    def first_batch(policy: str, seed: int = 0) -> torch.Tensor:
        cfg = DataConfig(dataset="synthetic", synthetic_train_samples=32, synthetic_test_samples=8, batch_size=16,
                         auto_augment=policy, seed=seed)  # fmt: skip
        return next(iter(build_data(cfg, torch.device("cpu")).train))[0]

    plain, augmented = first_batch("none"), first_batch("randaugment")
    assert torch.equal(augmented, first_batch("randaugment"))  # seeded by (seed, epoch)
    assert not torch.equal(augmented, plain) and not torch.equal(augmented, first_batch("randaugment", seed=1))
    steps = imagenet_transform(True, 32, "trivialaugment").transforms
    assert [type(s) for s in steps[:3]][2] is v2.TrivialAugmentWide
    assert not any(isinstance(s, v2.TrivialAugmentWide) for s in imagenet_transform(True, 32).transforms)
