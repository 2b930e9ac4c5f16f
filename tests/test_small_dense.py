"""``small-dense``: a dense network narrowed to the sparse one's active weights (RigL's Small-Dense)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm

import dstbench.models  # noqa: F401  (registers the CIFAR backbones)
from dstbench.analysis.report import report_rows
from dstbench.cli.app import main
from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.runs.configs import flat_config
from dstbench.train.loop import train
from dstbench.train.narrow import narrow_for, prunable_layers


def _count(model: str, multiplier: float) -> int:
    return sum(layer.numel for layer in prunable_layers(model, 10, multiplier))


@pytest.mark.parametrize(
    ("model", "grid", "expected"),
    # (model, its widest conv, (multiplier, narrowed weights, sparse active weights, full weights)) at 90 %, ERK
    [("tiny_cnn", 64, (19 / 64, 6185, 6099, 60976)), ("cifar_resnet32", 64, (20 / 64, 45335, 46200, 461872))],
)
def test_the_narrowed_count_is_the_closest_to_the_sparse_active_count(model: str, grid: int, expected: tuple) -> None:
    narrowing = narrow_for(model, 10, 0.9, "erk", "none", 1)
    assert (narrowing.channel_multiplier, narrowing.params, narrowing.target, narrowing.full_params) == expected
    full = prunable_layers(model, 10)
    assert narrowing.target == sum(t.active for t in plan_sparsity(full, 0.9, "erk", "none").targets)
    counts = [_count(model, j / grid) for j in range(1, grid + 1)]
    assert counts == sorted(counts)  # monotone: the bisection is sound
    assert min(abs(c - narrowing.target) for c in counts) == abs(narrowing.params - narrowing.target)
    assert abs(narrowing.params - narrowing.target) / narrowing.target < 0.02


def test_multiplier_one_is_the_original_network_and_a_bad_one_is_refused() -> None:
    for name in ("tiny_cnn", "cifar_resnet32", "cifar_resnet32_grasp", "cifar_vgg19", "cifar_mobilenetv2"):
        plain = describe_layers(timm.create_model(name, num_classes=10)) if name == "tiny_cnn" else prunable_layers(name, 10)
        assert prunable_layers(name, 10, 1.0) == plain
        assert _count(name, 0.5) < _count(name, 1.0)
    with pytest.raises(ValueError, match="channel_multiplier must be a positive number, got -1.0"):
        timm.create_model("tiny_cnn", channel_multiplier=-1)


def test_it_trains_the_narrowed_network_and_records_the_width(tmp_path: Path) -> None:
    out = tmp_path / "sd"
    overrides = {"method": "small-dense", "out": str(out), "epochs": 1, "synthetic_train_samples": 128,
                 "synthetic_test_samples": 32, "batch_size": 32}  # fmt: skip
    summary = train(resolve_config("quick", overrides=overrides), progress=False)
    record = summary["method_report"]["narrowing"]
    assert record == {"channel_multiplier": 19 / 64, "params": 6185, "target": 6099, "full_params": 60976}
    plan = json.loads((out / "plan.json").read_text())
    assert sum(layer["numel"] for layer in plan["layers"]) == 6185  # the network trained is the narrow one
    assert summary["realised_sparsity"] == {"all": 0.0, "sparsified": 0.0} and summary["train_loss"] > 0
    full = train(resolve_config("quick", overrides={**overrides, "method": "dense", "out": str(tmp_path / "d")}), progress=False)
    ratio = summary["flops"]["train_flops"] / full["flops"]["train_flops"]
    assert 0.05 < ratio < 0.15  # the narrowed network's FLOPs, about a tenth of the full one's
    # "x dense" is against the full-width network, as every other method's at this --model
    assert summary["flops"]["dense_train_flops"] == pytest.approx(full["flops"]["dense_train_flops"], rel=1e-12)
    assert summary["flops"]["train_flops_relative"] == pytest.approx(ratio, rel=1e-12)
    assert summary["flops"]["narrowed_dense_forward_flops"] < summary["flops"]["dense_forward_flops"]
    summary["config"] = flat_config(json.loads((out / "config.json").read_text()))
    (row,) = report_rows([summary])
    assert (row["label"], row["sparsity"]) == ("small-dense", 0.9)  # its sparsity sets its width: kept


def test_a_model_without_a_multiplier_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["train", "--preset", "quick", "--method", "small-dense", "--model", "resnet18", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dstbench: error: small-dense needs a model with a channel_multiplier; 'resnet18' has none (supported: tiny_cnn, "
        "cifar_resnet32, cifar_resnet32_grasp, cifar_vgg19, cifar_mobilenetv2)"
    ]


def test_methods_details_name_the_models_it_can_narrow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("small-dense ") :].split("\n")[:5]
    assert "  models (with a channel_multiplier): tiny_cnn, cifar_resnet32, cifar_resnet32_grasp, cifar_vgg19, cifar_mobilenetv2" in block
    assert "  budget: --budget 2x|5x multiplies --epochs, --warmup-epochs and: no cadence of its own" in block
