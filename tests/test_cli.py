"""The command line: listings, a real quick run, inspect, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dstbench.cli.app import main

TINY = ["--preset", "quick", "--epochs", "1", "--max-train-samples", "128", "--max-test-samples", "64", "--quiet"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_and_models_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    assert {"dense", "static", "set", "rigl"} <= set(out.split())
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert {"cifar_resnet32", "cifar_resnet32_grasp", "cifar_vgg19", "cifar_mobilenetv2"} <= set(out.split())


def test_train_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", *TINY, "--method", "set", "--sparsity", "0.95", "--out", str(out_dir))
    assert code == 0 and "test_acc" in out
    for name in ("config.json", "plan.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "masks/init.npz"):
        assert (out_dir / name).exists(), name
    code, out, _ = run_cli(capsys, "inspect", str(out_dir), "--json")
    report = json.loads(out)
    assert {"layers", "realised_sparsity", "topology_updates"} <= set(report)
    for layer in report["layers"]:
        assert {"name", "numel", "active", "target_active", "max_abs_pruned"} <= set(layer)
        assert layer["active"] == layer["target_active"]
        assert layer["max_abs_pruned"] == 0.0
    assert report["realised_sparsity"]["sparsified"] == pytest.approx(0.95, abs=0.01)
    code, out, _ = run_cli(capsys, "inspect", str(out_dir))
    assert code == 0 and "realised sparsity" in out


BAD_INPUT = [
    (["train", "--method", "nope"], "unknown method 'nope'; choose from"),
    (["train", "--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["train", "--dataset", "mnist"], "mnist"),
    (["train", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["train", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["train", "--sparsity", "nan"], "sparsity must be in [0, 1)"),
    (["train", "--distribution", "gauss"], "choose from uniform, er, erk"),
    (["train", "--dense-layers", "all"], "choose from none, first, mest"),
    (["train", "--hp", "delta_t=abc", "--method", "rigl"], "delta_t: expected int"),
    (["train", "--hp", "nonsense"], "--hp expects name=value"),
    (["train", "--epochs", "0"], "--epochs must be in [1, 100000]"),
    (["train", "--sparsity", "abc"], "invalid float value"),
    (["compare", "--methods", "rigl,bogus"], "unknown method 'bogus'"),
    (["compare", "--sparsities", "0.9,2"], "sparsity must be in [0, 1)"),
    (["inspect", "/nonexistent/run"], "not a dstbench run directory"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    extra = ["--out", str(tmp_path / "r")] if args[0] in ("train", "compare") else []
    if args[0] == "train" and "--preset" not in args:
        extra += TINY
    code, out, err = run_cli(capsys, args[0], *extra, *args[1:])
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("dstbench: error: ")
    assert "Traceback" not in err


def test_argparse_errors_are_one_line_too() -> None:
    result = subprocess.run([sys.executable, "-m", "dstbench.cli", "train", "--sparsity", "abc"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["dstbench: error: argument --sparsity: invalid float value: 'abc'"]


def test_missing_and_corrupt_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["train", "--dataset", "cifar10", "--model", "tiny_cnn", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *common, "--data-dir", str(tmp_path / "missing"))
    assert code == 2 and str(tmp_path / "missing") in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not a tarball")
    code, _, err = run_cli(capsys, *common, "--data-dir", str(bad))
    assert code == 2 and "bad.tar.gz" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, *common)
    assert code == 2 and "data" in err.lower()


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--out", str(out_dir))[0] == 0
    before = (out_dir / "summary.json").read_bytes()
    code, _, err = run_cli(capsys, "train", *TINY, "--out", str(out_dir))
    assert code == 2 and "already holds a run" in err
    assert (out_dir / "summary.json").read_bytes() == before


def test_data_prepare_then_train_from_ffcv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    betons = tmp_path / "betons"
    code, out, _ = run_cli(capsys, "data", "prepare", "--dataset", "synthetic", "--out", str(betons),
                           "--max-train-samples", "128", "--max-test-samples", "64")  # fmt: skip
    assert code == 0 and out.split() == [str(betons / "train.beton"), str(betons / "test.beton")]
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--loader", "ffcv", "--beton-dir", str(betons), "--out", str(run))
    assert code == 0, err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["step"] == 2  # 128 samples at batch 64
