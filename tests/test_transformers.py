"""Vision transformers: ``--model-kwargs``, the ``vit`` dense-layer profile, ERK on linear layers, the
ViT presets trained, resumed and inspected on synthetic data (issue 21)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.cli.app import main
from dstbench.config import PRESETS, resolve_config
from dstbench.core.distributions import dense_layer_reasons, layer_densities
from dstbench.core.errors import ConfigError
from dstbench.core.layers import PrunableLayer, describe_layers
from dstbench.core.model_kwargs import check_model_kwargs, parse_model_kwargs
from dstbench.runs.inspect import inspect_run, render_inspection
from dstbench.runs.reuse import find_mismatch
from dstbench.speed.measure import load_run
from dstbench.train.backbone import build_model
from dstbench.train.loop import train
from tests.kill import train_until_interrupted
from tests.test_methods_contract import _run_files

SMALL = {"dataset": "synthetic", "synthetic_train_samples": 48, "synthetic_test_samples": 16, "batch_size": 16,
         "epochs": 2, "warmup_epochs": 0, "model_kwargs": "depth=2"}  # fmt: skip
HP = {"rigl": {"delta_t": 2}, "bidst": {"update_frequency": 1}}


def _vit(method: str, out: Path, **fields: Any) -> Any:
    return resolve_config("cifar-vit-tiny", None, {**SMALL, "method": method, "out": str(out), **fields}, HP[method])


# -- --model-kwargs ------------------------------------------------------------------------------------------
def test_model_kwargs_are_typed_as_yaml_types_them() -> None:
    text = "img_size=32,patch_size=(4,4),drop_path_rate=1e-05,class_token=false,global_pool=avg,act=none,depth=2"
    assert parse_model_kwargs(text) == {
        "act": None, "class_token": False, "depth": 2, "drop_path_rate": 1e-05, "global_pool": "avg",
        "img_size": 32, "patch_size": [4, 4],
    }  # fmt: skip


_WORDS = st.from_regex(r"[a-z]{4,8}", fullmatch=True).filter(lambda w: w not in {"none", "null", "true", "false"})
_VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), _WORDS)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n != "pretrained"), _VALUES, min_size=1, max_size=5))
def test_a_written_mapping_parses_back_to_itself(kwargs: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in kwargs.items() if k not in {"num_classes", "pretrained_cfg", "checkpoint_path"}}
    text = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else v}" for k, v in kwargs.items())
    assert parse_model_kwargs(text) == check_model_kwargs(kwargs) == dict(sorted(kwargs.items()))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("img_size", "--model-kwargs expects name=value pairs separated by commas, got 'img_size'"),
        ("num_classes=3", "--model-kwargs: num_classes cannot be set: the number of classes comes from the dataset"),
        ("x=[a,b]", "--model-kwargs x: ['a', 'b'] is not a number, true/false, none, a word or a list of numbers"),
        ({"1x": 2}, "--model-kwargs: '1x' is not an argument name"),
    ],
)
def test_bad_model_kwargs_are_one_line(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_model_kwargs(value)
    assert str(caught.value) == message


def test_yaml_mapping_and_command_line_are_one_run_and_add_to_the_preset(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model_kwargs:\n  depth: 2\n  patch_size: [4, 4]\n")
    from_yaml = resolve_config("cifar-vit-tiny", str(tmp_path / "c.yaml"), {"out": "x"})
    from_flag = resolve_config("cifar-vit-tiny", None, {"out": "x", "model_kwargs": "patch_size=(4,4),depth=2"})
    expected = {"depth": 2, "drop_path_rate": 0.1, "img_size": 32, "patch_size": [4, 4]}
    assert from_yaml.model_kwargs == from_flag.model_kwargs == expected
    assert from_yaml.to_json()["run"]["model_kwargs"] == expected
    assert find_mismatch(from_flag.to_json(), None, from_yaml) is None
    other = resolve_config("cifar-vit-tiny", None, {"out": "x", "model_kwargs": "depth=3"})
    assert find_mismatch(from_flag.to_json(), None, other) == (
        "model_kwargs", expected, {**expected, "depth": 3, "patch_size": 4}
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "vit_tiny_patch16_224 expects 224x224 inputs, the data is 32x32: set --model-kwargs img_size=32"),
        (["--model-kwargs", "img_size=32,foo=1"], "--model-kwargs: vit_tiny_patch16_224 takes no argument 'foo'"),
    ],
)
def test_a_model_the_data_does_not_fit_is_one_line(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--method", "rigl", "--model", "vit_tiny_patch16_224", "--dataset", "synthetic", "--epochs", "1",
            "--out", str(tmp_path / "run"), "--quiet", *args]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"dstbench: error: {message}"
    assert not (tmp_path / "run").exists()  # refused before the folder is made


def test_flops_takes_the_model_arguments_and_refuses_what_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flops", "--model", "vit_tiny_patch16_224", "--input-size", "32", "--num-classes", "10"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "dstbench: error: vit_tiny_patch16_224 expects 224x224 inputs, the data is 32x32: set --model-kwargs img_size=32"
    )
    assert main([*argv, "--model-kwargs", "img_size=32,patch_size=4,depth=1", "--dense-layers", "vit", "--sparsity", "0.9", "--distribution", "erk"]) == 0
    # 64 patches x 48x192 (patch embedding) + 65 tokens x 442,368 (qkv, proj, fc1, fc2) + 192x10 (head), x2
    assert "forward FLOPs per sample: dense 5.869e+07, sparse 6.934e+06" in capsys.readouterr().out


# -- which layers are sparse ---------------------------------------------------------------------------------
def test_the_vit_profile_keeps_patch_embedding_and_head_dense_and_every_block_linear_sparse() -> None:
    layers = describe_layers(build_model("vit_tiny_patch16_224", 10, {"img_size": 32, "patch_size": 4, "depth": 2}))
    assert dense_layer_reasons(layers, "vit") == {"patch_embed.proj": "patch embedding", "head": "classifier head"}
    sparse = [layer.name for layer in layers if layer.name not in {"patch_embed.proj", "head"}]
    assert sparse == [f"blocks.{b}.{part}" for b in range(2) for part in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]


def test_erk_on_linear_layers_follows_rigl() -> None:
    """RigL's sparse_utils: raw probability (n_in + n_out) / (n_in * n_out) for a linear layer; eps solves
    sum(eps * raw * n) = (1 - s) * sum(n)."""
    layers = [PrunableLayer("a", (300, 100), "linear"), PrunableLayer("b", (100, 300), "linear"), PrunableLayer("c", (10, 100), "linear")]
    raw = [400 / 30000, 400 / 30000, 110 / 1000]
    numel = [30000, 30000, 1000]
    eps = 0.1 * sum(numel) / sum(r * n for r, n in zip(raw, numel))
    densities = layer_densities(layers, 0.9, "erk")
    assert [densities[name] for name in "abc"] == pytest.approx([eps * r for r in raw], rel=1e-12)
    assert layer_densities(layers, 0.9, "er") == densities  # a linear layer has no kernel dimensions
    assert math.isclose(sum(densities[name] * n for name, n in zip("abc", numel)), 0.1 * sum(numel))


# -- the presets, trained ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "bidst"])
def test_cifar_vit_tiny_trains_with_exact_counts_and_resumes_bit_identically(method: str, tmp_path: Path) -> None:
    train(_vit(method, tmp_path / "reference"), progress=False)
    train_until_interrupted(_vit(method, tmp_path / "killed"), after_checkpoint=1)
    train(_vit(method, tmp_path / "killed"), resume=True, progress=False)
    reference, resumed = _run_files(tmp_path / "reference"), _run_files(tmp_path / "killed")
    assert resumed == reference

    report = inspect_run(tmp_path / "reference")
    for layer in report["layers"]:
        assert layer["active"] == layer["target_active"] >= layer["nonzero"]  # grown weights may start at 0
        assert layer["sparsified"] or layer["active"] == layer["numel"]
        assert layer["max_abs_pruned"] == 0.0
    dense = {layer["name"]: layer["dense_reason"] for layer in report["layers"] if not layer["sparsified"]}
    assert dense == {"patch_embed.proj": "vit: patch embedding", "head": "vit: classifier head"}
    assert [layer["name"] for layer in report["layers"] if layer["sparsified"]][0] == "blocks.0.attn.qkv"
    assert report["not_prunable"]["other_than_norms_and_biases"] == ["cls_token", "pos_embed"]
    text = render_inspection(report)
    assert "patch_embed.proj (dense, vit: patch embedding)" in text and "head (dense, vit: classifier head)" in text
    summary = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert summary["model_kwargs"] == {"depth": 2, "drop_path_rate": 0.1, "img_size": 32, "patch_size": 4}
    assert summary["device"] == "cpu (1 thread)"
    assert summary["topology_updates"] >= 1
    loaded = load_run(tmp_path / "reference")  # `dstbench speed` rebuilds the model with the run's arguments
    assert loaded.input_shape == (3, 32, 32) and len(loaded.model.blocks) == 2


def test_the_deit_preset_builds_deit_small_for_its_224_pixel_images() -> None:
    cfg = resolve_config("imagenet-deit-small", None, {"out": "x"})
    assert (cfg.model, cfg.model_kwargs, cfg.dense_layers, cfg.lr, cfg.weight_decay, cfg.warmup_epochs, cfg.epochs) == (
        "deit_small_patch16_224", {"drop_path_rate": 0.1}, "vit", 5e-4 * cfg.batch_size / 512, 0.05, 5, 300
    )
    assert "cifar-vit-tiny" in PRESETS
