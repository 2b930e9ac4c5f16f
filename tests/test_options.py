"""One source for every option: each TrainConfig field is a flag of train/compare/sweep whose help is
the field's docstring and default, and ``methods --details`` prints every hyper-parameter the same way."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from dstbench.cli.app import build_parser, main
from dstbench.config import PRESETS, TrainConfig, implied_preset, resolve_config
from dstbench.core.fielddocs import field_docs
from dstbench.core.registry import get_method, list_methods
from dstbench.runs.configs import read_config
from dstbench.runs.rundir import RunDir


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_every_config_field_is_a_flag_with_its_docstring_and_default(command: str) -> None:
    docs = field_docs(TrainConfig)
    options = {a.dest: a for a in _subparser(command)._actions}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "hp" or (command != "train" and f.name in ("method", "sparsity", "seed", "out")):
            continue
        assert docs.get(f.name), f"TrainConfig.{f.name} has no docstring"
        action = options[f.name]
        assert action.help is not None and docs[f.name].replace("%", "%%") in action.help
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "unset" if default in (None, {}) else str(default).lower() if isinstance(default, bool) else str(default)
        quick = PRESETS["quick"].fields
        if f.name in quick and quick[f.name] != f.default:  # what a bare command runs (config.implied_preset)
            assert action.help.endswith(
                f"(default: {quick[f.name]} from the quick preset; {shown} with --preset, --config, --model, --dataset "
                "or --data-dir)"
            ), action.help
        else:
            assert action.help.endswith(f"(default: {shown})"), action.help
        assert action.default is None  # explicit flags are told apart from preset and config values


def test_fields_without_a_flag_before_are_settable_now() -> None:
    args = _subparser("train").parse_args(["--no-augment", "--synthetic-train-samples", "128"])
    assert args.augment is False and args.synthetic_train_samples == 128


def test_methods_details_lists_needs_and_every_hyperparameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    for name in list_methods():
        cls = get_method(name)
        docs = field_docs(cls)
        block = out.split(f"\n{name:12s} " if not out.startswith(name) else f"{name:12s} ", 1)[1]
        block = block.split("\n", 1)[1]
        lines = block.split("\n")
        assert lines[0].startswith("  needs: ")
        for f in dataclasses.fields(cls):
            line = next(line for line in lines if line.startswith(f"  {f.name} = "))
            assert line.startswith(f"  {f.name} = {f.default}")
            if cls.__module__.startswith("dstbench.methods"):
                assert docs.get(f.name) and line.endswith(docs[f.name]), f"{name}.{f.name} is undocumented"


def test_quick_preset_sets_the_cadence_of_any_method_with_declared_cadence_fields() -> None:
    quick = PRESETS["quick"]
    for name in list_methods():
        cfg = resolve_config("quick", None, {"method": name})
        for field_name, unit in get_method(name).cadence_fields.items():
            expected = quick.method_hp.get(name, {}).get(field_name, quick.cadence[unit])  # own entry wins
            assert cfg.hp[field_name] == expected, (name, field_name)
    assert get_method("gradual-regrow").cadence_fields  # the example plugin is scaled like a built-in


def test_choices_are_offered_and_accepted_in_any_case() -> None:
    train = _subparser("train")
    assert "{uniform,er,erk,global}" in train.format_help() and "{none,first,mest,vit}" in train.format_help()
    args = train.parse_args(["--distribution", "ERK", "--dense-layers", "MEST"])
    assert (args.distribution, args.dense_layers) == ("erk", "mest")
    assert resolve_config("quick", None, {"distribution": "Uniform"}).distribution == "uniform"


def test_each_field_is_declared_once_in_its_group() -> None:
    from dstbench.config import GROUPS, MethodOptions
    from dstbench.data import DataConfig

    owners = [f.name for cls in (MethodOptions, *GROUPS.values()) for f in dataclasses.fields(cls)]
    assert sorted(owners) == sorted(f.name for f in dataclasses.fields(TrainConfig))  # no field twice, none lost
    cfg = resolve_config("quick", None, {"seed": 3, "batch_size": 16})
    data = DataConfig.from_options(cfg.group("data"), seed=cfg.seed)
    assert (data.dataset, data.batch_size, data.seed, data.shard_count) == ("synthetic", 16, 3, 1)
    user_options = {f.name for f in dataclasses.fields(GROUPS["data"])}
    added = {f.name for f in dataclasses.fields(DataConfig)} - user_options
    assert added == {"seed", "channels_last", "synthetic_num_classes", "download", "shard_rank", "shard_count"}


def test_the_methods_that_rank_globally_come_from_the_registry() -> None:
    from dstbench.core.distributions import GLOBAL_POLICIES, check_distribution_policy

    ranking = [name for name in list_methods() if get_method(name)().needs.density_policy in GLOBAL_POLICIES]
    assert {"granet", "deep-r", "snip", "lt"} <= set(ranking)
    with pytest.raises(Exception, match="ranks globally") as error:
        check_distribution_policy("global", "exact", "rigl")
    assert str(error.value).endswith(", ".join(ranking) + ")")


def test_a_bare_train_runs_the_quick_preset_like_a_bare_compare(tmp_path: Path) -> None:
    """`dstbench train` with nothing naming a model or data runs what its --help says (the quick
    preset), as `dstbench compare` does, instead of asking for CIFAR-10."""
    out = tmp_path / "r"
    argv = ["train", "--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "16", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    config = read_config(RunDir(out))
    quick = PRESETS["quick"].fields
    assert (config["model"], config["dataset"]) == (quick["model"], quick["dataset"]) == ("tiny_cnn", "synthetic")
    assert implied_preset(None, None, {"dataset": "cifar10"}) is None and implied_preset("cifar-resnet32", None, {}) == "cifar-resnet32"
