"""Every bad input is one line and exit code 2, through the real entry point (``dstbench.cli.main``).

``BAD_INPUT`` is the table. The coverage tests walk the CLI's parsers and ``TrainConfig``: a numeric
option without a range rule, a numeric field without a ``Range`` in its annotation, or either without a
rejection case here, fails the suite, so a new option cannot arrive unchecked.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import typing
from pathlib import Path

import pytest

from dstbench.cli.app import build_parser, main
from dstbench.config import TrainConfig
from dstbench.core.hparams import Range, field_annotations
from dstbench.core.validation import Rule

TINY = ["--preset", "quick", "--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "32", "--quiet"]
FLOPS = ["flops", "--model", "tiny_cnn", "--input-size", "32"]
FLOPS_TRAIN = [*FLOPS, "--method", "rigl", "--epochs", "1", "--train-samples", "64"]

# (arguments, expected fragment of the one error line). "{tmp}" is a fresh folder; "train" and
# "compare" get TINY and an --out in it unless they set their own.
BAD_INPUT: list[tuple[list[str], str]] = [
    # train / compare / sweep: every numeric TrainConfig field with a CLI flag
    (["train", "--lr", "inf"], "--lr must be finite and >= 0, got inf"),
    (["train", "--lr", "nan"], "--lr must be finite and >= 0"),
    (["train", "--lr", "-0.1"], "--lr must be finite and >= 0"),
    (["train", "--momentum", "inf"], "--momentum must be in [0, 1)"),
    (["train", "--momentum", "5"], "--momentum must be in [0, 1), got 5.0"),
    (["train", "--weight-decay", "inf"], "--weight-decay must be finite and >= 0"),
    (["train", "--eta-min", "inf"], "--eta-min must be finite and >= 0"),
    (["train", "--warmup-epochs", "nan"], "--warmup-epochs must be finite and >= 0"),
    (["train", "--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1], got 1.5"),
    (["train", "--mixup", "-1"], "--mixup must be finite and >= 0, got -1.0"),
    (["train", "--cutmix", "inf"], "--cutmix must be finite and >= 0"),
    (["train", "--ema", "1"], "--ema must be in [0, 1), got 1.0"),
    (["train", "--opt", "adamw", "--opt-eps", "0"], "--opt-eps must be finite and > 0, got 0.0"),
    (["train", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["train", "--seed", str(2**64)], f"--seed must be in [0, 4294967295], got {2**64}"),
    (["train", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["train", "--sparsity", "nan"], "sparsity must be in [0, 1)"),
    (["train", "--epochs", "0"], "--epochs must be in [1, 100000], got 0"),
    (["train", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["train", "--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    (["train", "--grad-accum", "0"], "--grad-accum must be >= 1"),
    (["train", "--max-train-samples", "0"], "--max-train-samples must be >= 1"),
    (["train", "--max-test-samples", "-3"], "--max-test-samples must be >= 1"),
    (["train", "--min-active", "-1"], "--min-active must be >= 0"),
    (["train", "--save-rewind-step", "-1"], "--save-rewind-step must be >= 0"),
    (["train", "--num-workers", "-1"], "--num-workers must be >= 0"),
    (["compare", "--lr", "inf"], "--lr must be finite and >= 0"),
    (["compare", "--seeds", "0,-1"], "--seed must be in [0, 4294967295], got -1"),
    (["compare", "--sparsities", "0.9,nan"], "sparsity must be in [0, 1)"),
    (["sweep", "--methods", "rigl", "--momentum", "5", "--out", "{tmp}/s"], "--momentum must be in [0, 1)"),
    # fields only a --config file can set
    (["train", "--config", "{tmp}/synthetic_train_samples.yaml"], "--synthetic-train-samples must be in [1, 1000000], got 0"),
    (["train", "--config", "{tmp}/synthetic_test_samples.yaml"], "--synthetic-test-samples must be in [1, 1000000], got -5"),
    (["train", "--config", "{tmp}/lr_yaml_inf.yaml"], "--lr must be finite and >= 0, got inf"),
    # subcommand options
    ([*FLOPS, "--num-classes", "0"], "argument --num-classes: must be >= 1, got 0"),
    ([*FLOPS, "--num-classes", "-1"], "argument --num-classes: must be >= 1, got -1"),
    (["flops", "--model", "tiny_cnn", "--input-size", "0"], "argument --input-size: must be >= 1, got 0"),
    (["speed", "run", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["speed", "run", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["speed", "run", "--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
    (["speed", "run", "--min-time", "0"], "argument --min-time: must be finite and > 0, got 0"),
    ([*FLOPS, "--sparsity", "1.5"], "argument --sparsity: must be in [0, 1), got 1.5"),
    ([*FLOPS, "--sparsity", "nan"], "argument --sparsity: must be in [0, 1), got nan"),
    ([*FLOPS, "--min-active", "-1"], "argument --min-active: must be >= 0"),
    ([*FLOPS_TRAIN, "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    ([*FLOPS, "--method", "rigl", "--epochs", "0", "--train-samples", "5"], "argument --epochs: must be >= 1"),
    ([*FLOPS, "--method", "rigl", "--epochs", "1", "--train-samples", "0"], "argument --train-samples: must be >= 1"),
    (["plot", "iou", "{tmp}", "--out", "{tmp}/x.png", "--interval", "nan"], "argument --interval: must be finite and > 0"),
    (["plot", "iou", "{tmp}", "--out", "{tmp}/x.png", "--interval", "inf"], "argument --interval: must be finite and > 0"),
    (["plot", "iou", "{tmp}", "--out", "{tmp}/x.png", "--interval-steps", "0"], "argument --interval-steps: must be >= 1"),
    (["plot", "crossover", "--model", "tiny_cnn", "--out", "{tmp}/x.png", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["plot", "crossover", "--model", "tiny_cnn", "--out", "{tmp}/x.png", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["plot", "crossover", "--model", "tiny_cnn", "--out", "{tmp}/x.png", "--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
    (["plot", "crossover", "--model", "tiny_cnn", "--out", "{tmp}/x.png", "--min-time", "0"], "argument --min-time: must be finite and > 0, got 0"),
    (["data", "prepare", "--dataset", "synthetic", "--out", "{tmp}/b", "--max-train-samples", "0"],
     "argument --max-train-samples: must be >= 1"),
    (["data", "prepare", "--dataset", "synthetic", "--out", "{tmp}/b", "--max-test-samples", "0"],
     "argument --max-test-samples: must be >= 1"),
    (["data", "prepare", "--dataset", "synthetic", "--out", "{tmp}/b", "--seed", "-1"], "argument --seed: must be in [0,"),
    # paths
    (["train", "--out", ""], "--out is empty"),
    (["compare", "--out", ""], "--out is empty"),
    (["sweep", "--methods", "rigl", "--out", ""], "--out is empty"),
    (["data", "prepare", "--dataset", "synthetic", "--out", ""], "--out is empty"),
    (["train", "--out", "{tmp}/a_file"], "is a file, not a folder"),
    (["train", "--out", "{tmp}/a_file/run"], "which is a file"),
    (["compare", "--out", "{tmp}/a_file"], "is a file, not a folder"),
    (["train", "--config", "{tmp}/binary.yaml"], "is not a text file (not UTF-8)"),
    (["train", "--config", "{tmp}/missing.yaml"], "cannot read config file"),
    # issue 22: sizes no run can have are refused in one line, before anything hangs or is drawn
    (["train", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["train", "--epochs", "99999999999999999999999"], "--epochs must be in [1, 100000], got 99999999999999999999999"),
    (["train", "--synthetic-train-samples", "99999999999999999999999"], "--synthetic-train-samples must be in [1, 1000000]"),
    (["train", "--synthetic-test-samples", "99999999999999999999999"], "--synthetic-test-samples must be in [1, 1000000]"),
    (["train", "--grad-accum", "99999999999999999999999"],
     "--grad-accum 99999999999999999999999 exceeds --batch-size 64: each micro-batch needs at least one sample"),
    (["train", "--sparsity", "-0.0"], "--sparsity 0 leaves rigl no weight to prune or move; train a dense network with --method dense"),
    (["train", "--method", "snip", "--sparsity", "0"], "--sparsity 0 leaves snip no weight to prune or move"),
    (["train", "--min-active", "99999999999999999999999"],
     "--min-active 99999999999999999999999 would keep layer features.1.0 (4608 weights) dense while --sparsity 0.9 asks it to keep 936; at most --min-active 431 keeps every sparsified layer sparse"),
    (["train", "--batch-size", "99999999999999999999999"],
     "--batch-size 99999999999999999999999 exceeds the 64 training samples of synthetic; use at most --batch-size 64"),
    # issue 22: a --hp prefix that names no method of the grid is refused, not ignored
    (["compare", "--methods", "rigl,mest", "--hp", "mset.update_frequency=3"],
     "--hp mset.update_frequency: 'mset' is not among --methods (rigl, mest); did you mean mest.update_frequency?"),
    (["compare", "--methods", "rigl,mest", "--hp", "set.zeta=0.5"], "--hp set.zeta: 'set' is not among --methods (rigl, mest)"),
    (["compare", "--methods", "bidst,rigl", "--hp", "delta_t=50"],
     "--hp delta_t applies to every method, and bidst has no 'delta_t'; set it for the methods that have it: rigl.delta_t"),
    # data sizes are reported, not clamped (the quick preset has 2048 / 512 synthetic samples)
    (["train", "--preset", "quick", "--epochs", "1", "--max-train-samples", "5000", "--quiet", "--out", "{tmp}/r"],
     "--max-train-samples 5000 exceeds the 2048 training samples of synthetic"),
    (["train", "--preset", "quick", "--epochs", "1", "--max-test-samples", "600", "--quiet", "--out", "{tmp}/r"],
     "--max-test-samples 600 exceeds the 512 test samples of synthetic"),
    # Where the runs of a grid execute (compare and sweep take the same options).
    *[
        ([command, *grid, option, value, "--out", "{tmp}/x"], message)
        for command, grid in (
            ("compare", ["--methods", "rigl"]),
            ("sweep", ["--methods", "rigl"]),
            ("reproduce", ["table1", "--scale", "smoke"]),
        )
        for option, value, message in (
            ("--jobs", "0", "argument --jobs: must be >= 1"),
            ("--slurm-gpus", "-1", "argument --slurm-gpus: must be >= 0"),
            ("--slurm-cpus", "0", "argument --slurm-cpus: must be >= 1"),
            ("--slurm-mem-gb", "inf", "argument --slurm-mem-gb: must be"),
            ("--slurm-time", "0", "argument --slurm-time: must be >= 1"),
        )
    ],
    (["lt", "--sparsity", "1.0", "--out", "{tmp}/lt"], "argument --sparsity: must be in [0, 1)"),
    (["lt", "--sparsity", "0.9", "--rounds", "0", "--out", "{tmp}/lt"], "argument --rounds: must be >= 1"),
    (["lt", "--sparsity", "0.9", "--prune-per-round", "1.5", "--out", "{tmp}/lt"], "argument --prune-per-round: must be in [0, 1]"),
    (["lt", "--sparsity", "0.9", "--rewind-step", "-1", "--out", "{tmp}/lt"], "argument --rewind-step: must be >= 0"),
    (["lt", "--sparsity", "0.9", "--seed", "-1", "--out", "{tmp}/lt"], "argument --seed: must be in [0,"),
]


def _prepare(tmp: Path) -> None:
    (tmp / "a_file").write_text("not a folder")
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp / "synthetic_train_samples.yaml").write_text("synthetic_train_samples: 0\n")
    (tmp / "synthetic_test_samples.yaml").write_text("synthetic_test_samples: -5\n")
    (tmp / "lr_yaml_inf.yaml").write_text("lr: .inf\n")


def _expand(args: list[str], tmp: Path) -> list[str]:
    expanded = [a.replace("{tmp}", str(tmp)) for a in args]
    command = expanded[0]
    if command in ("train", "compare") and "--preset" not in expanded:
        expanded[1:1] = TINY
    if command in ("train", "compare") and "--out" not in expanded:
        expanded += ["--out", str(tmp / "out")]
    return expanded


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, err)
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("dstbench: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a)[:60] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a case that wrongly succeeds must not write into the checkout
    _prepare(tmp_path)
    line = _one_line(capsys, _expand(args, tmp_path))
    assert message in line


@pytest.mark.parametrize(
    "errno_, strerror",
    [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")],
)
def test_a_failing_file_system_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, errno_: int, strerror: str
) -> None:
    """Full disk, no permission, read-only: injected at the write (root ignores permission bits)."""
    import dstbench.runs.atomic

    def failing_fsync(fd: int) -> None:
        raise OSError(errno_, strerror)

    monkeypatch.setattr(dstbench.runs.atomic.os, "fsync", failing_fsync)
    line = _one_line(capsys, ["train", *TINY, "--out", str(tmp_path / "r")])
    assert f"{strerror} (errno {errno_})" in line and str(tmp_path / "r") in line


def test_full_disk_mid_run_leaves_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dstbench.runs.atomic

    run = tmp_path / "r"
    args = ["train", *TINY, "--epochs", "2", "--out", str(run)]
    real_replace = os.replace
    checkpoints: list[bytes] = []

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "checkpoint.pt":
            if checkpoints:  # the second epoch's checkpoint finds the disk full
                raise OSError(errno.ENOSPC, "No space left on device")
            checkpoints.append(Path(src).read_bytes())
        real_replace(src, dst)

    monkeypatch.setattr(dstbench.runs.atomic.os, "replace", replace)
    line = _one_line(capsys, args)
    assert line == (f"dstbench: error: cannot write {run / 'checkpoint.pt'}: No space left on device (errno 28); "
                    "checkpoint.pt is unchanged")  # fmt: skip
    assert (run / "checkpoint.pt").read_bytes() == checkpoints[0]
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(dstbench.runs.atomic.os, "replace", real_replace)
    assert main([*args, "--resume"]) == 0


# -- coverage: a numeric option without a rule or a case fails here -------------------------------------
def _numeric_fields() -> set[str]:
    hints = typing.get_type_hints(TrainConfig)
    numeric = set()
    for f in dataclasses.fields(TrainConfig):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        if any(a in (int, float) for a in args):
            numeric.add(f.name)
    return numeric


def _ranged_fields() -> set[str]:
    """TrainConfig fields whose annotation carries a Range (directly or inside Optional)."""
    ranged = set()
    for name, hint in field_annotations(TrainConfig).items():
        parts = [hint, *typing.get_args(hint)]
        if any(typing.get_origin(a) is typing.Annotated and any(isinstance(x, Range) for x in a.__metadata__) for a in parts):
            ranged.add(name)
    return ranged


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {prefix: parser} if prefix else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_subparsers(sub, f"{prefix} {name}".strip()))
    return found


def _numeric_options() -> dict[str, set[str]]:
    """command -> its options that take a number (raw int/float or a Rule)."""
    options: dict[str, set[str]] = {}
    for command, parser in _subparsers(build_parser()).items():
        for action in parser._actions:
            if action.type in (int, float) or isinstance(action.type, Rule):
                options.setdefault(command, set()).add(action.option_strings[-1])
    return options


def test_every_numeric_config_field_has_a_rule_and_a_case() -> None:
    fields = _numeric_fields()
    assert fields - _ranged_fields() == set(), "numeric TrainConfig fields without a Range in their annotation"
    covered = set()
    for args, message in BAD_INPUT:
        for field_name in fields:
            if f"--{field_name.replace('_', '-')} must" in message or (field_name == "sparsity" and "sparsity must" in message):
                covered.add(field_name)
    assert fields - covered == set(), "numeric TrainConfig fields without a case in BAD_INPUT"


def test_every_numeric_subcommand_option_has_a_rule_and_a_case() -> None:
    training = {"train", "compare", "sweep", "lt", "reproduce"}  # config options: checked by TrainConfig.validate
    for command, options in _numeric_options().items():
        for option in options:
            action = next(a for a in _subparsers(build_parser())[command]._actions if option in a.option_strings)
            dest = action.dest
            if command in training and dest in _ranged_fields():
                continue  # checked by TrainConfig.validate (and covered above)
            assert isinstance(action.type, Rule), f"`{command} {option}` takes a number without a range rule"
            cases = [args for args, _ in BAD_INPUT if " ".join(args).startswith(command) and option in args]
            assert cases, f"`{command} {option}` has no rejection case in BAD_INPUT"
