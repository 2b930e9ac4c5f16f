"""Grid execution: ``--jobs N`` and submitit's local executor give the run folders of ``--jobs 1``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dstbench.cli.app import main
from dstbench.config import TrainConfig
from dstbench.grid.compare import grid_configs, run_grid
from dstbench.core.errors import ConfigError
from dstbench.grid.launch import Execution, SlurmOptions, _finished_line, _placed
from dstbench.runs.configs import flat_config

# Two tiny runs: 256 synthetic images, batch 32, 2 epochs (16 steps), updates every 4 steps.
GRID: dict[str, Any] = dict(
    sparsities=None,
    seeds=[0, 1],
    preset="quick",
    config_file=None,
    overrides={"epochs": 2, "batch_size": 32, "synthetic_train_samples": 256, "synthetic_test_samples": 64},
    hp={"rigl.delta_t": 4},
)
TIMING = ("seconds", "time", "run_dir")  # wall-clock times and where the run lives


def _timing(key: str) -> bool:
    return any(word in key for word in TIMING)


def _strip(value: Any) -> Any:
    """A run's numbers without wall-clock times (the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _timing(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _folder(run: Path) -> dict[str, Any]:
    """Everything a run folder records except timings and the device it ran on."""
    summary = _strip(json.loads((run / "summary.json").read_text()))
    metrics = [_strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    topology = [_strip(json.loads(line)) for line in (run / "topology.jsonl").read_text().splitlines()]
    config = {k: v for k, v in flat_config(json.loads((run / "config.json").read_text())).items() if k not in ("out", "device")}
    masks = {}
    for snap in sorted((run / "masks").glob("*.npz")):
        with np.load(snap) as data:
            masks[snap.name] = {k: data[k].tobytes() for k in data.files}
    return {"summary": summary, "metrics": metrics, "topology": topology, "config": config, "masks": masks}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs1")
    run_grid(["rigl"], out=str(out), progress=False, **GRID)
    return out


def test_two_jobs_write_the_folders_of_one_job(sequential: Path, tmp_path: Path) -> None:
    run_grid(["rigl"], out=str(tmp_path), progress=False, execution=Execution(jobs=2), **GRID)
    for name in ("rigl_s0.9_seed0", "rigl_s0.9_seed1"):
        assert _folder(tmp_path / name) == _folder(sequential / name)
    assert _strip(json.loads((tmp_path / "compare.json").read_text())) == _strip(
        json.loads((sequential / "compare.json").read_text())
    )


def test_submitit_local_launcher_writes_the_same_folders(sequential: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    # One CPU per job, like the in-process reference (conftest: one torch thread): same float order.
    local = Execution(launcher="local", slurm=SlurmOptions(cpus=1))
    run_grid(["rigl"], out=str(tmp_path), progress=False, execution=local, **GRID)
    for name in ("rigl_s0.9_seed0", "rigl_s0.9_seed1"):
        assert _folder(tmp_path / name) == _folder(sequential / name)
    assert list((tmp_path / ".submitit").iterdir()), "submitit kept no job folders"


def test_an_interrupted_grid_trains_only_what_is_missing(sequential: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(sequential, tmp_path, dirs_exist_ok=True)
    done, redo = tmp_path / "rigl_s0.9_seed0", tmp_path / "rigl_s0.9_seed1"
    (redo / "summary.json").unlink()  # as if killed after its last checkpoint
    before = (done / "summary.json").stat().st_mtime_ns
    run_grid(["rigl"], out=str(tmp_path), progress=False, execution=Execution(jobs=2), **GRID)
    assert (done / "summary.json").stat().st_mtime_ns == before
    assert _folder(redo) == _folder(sequential / "rigl_s0.9_seed1")


def test_devices_are_assigned_round_robin() -> None:
    configs = grid_configs(["rigl", "set"], out="x", **GRID)
    placed = _placed(configs, ["cuda:0", "cuda:1", "cuda:2"])
    assert [c.device for c in placed] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert [c.out for c in placed] == [c.out for c in configs]


def test_slurm_options_become_submitit_parameters() -> None:
    options = SlurmOptions(partition="gpu", gpus=1, cpus=8, mem_gb=32, time_min=600, account="lab",
                           sbatch=("constraint=a100", "--qos=high"))
    params = options.executor_parameters("slurm")
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "lab"
    assert params["gpus_per_node"] == 1 and params["cpus_per_task"] == 8 and params["mem_gb"] == 32
    assert params["timeout_min"] == 600
    assert params["slurm_additional_parameters"] == {"constraint": "a100", "qos": "high"}
    assert "slurm_partition" not in options.executor_parameters("local")
    with pytest.raises(ConfigError, match="key=value"):
        SlurmOptions(sbatch=("nonsense",)).executor_parameters("slurm")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "argument --jobs: must be >= 1"),
        (["--devices", "tpu:0"], "unknown device 'tpu:0'"),
        (["--launcher", "kubernetes"], "invalid choice"),
    ],
)
def test_bad_execution_options_are_one_line(args: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--methods", "rigl", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dstbench: error:") and message in err and err.count("\n") == 1


def test_a_run_failing_in_a_worker_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-cifar"
    code = main(["compare", "--methods", "rigl,set", "--dataset", "cifar10", "--data-dir", str(missing),
                 "--jobs", "2", "--out", str(tmp_path / "grid"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dstbench: error:") and str(missing) in err and err.count("\n") == 1


def test_a_finished_run_line_labels_its_count_and_its_clock() -> None:
    """The grid's `[k/N]` lines count finished runs, and their time is the grid's, not the run's."""
    line = _finished_line(2, 5, TrainConfig(out="runs/x/rigl_s0.9_seed0"), {"test_acc": 0.8125}, 61.4)
    assert line == "[2/5 finished] rigl_s0.9_seed0: test_acc 0.8125 (61s since the grid started)"


def test_a_jobs_grid_draws_no_bar_into_a_redirected_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`compare --jobs 2 > log 2>&1`: the overall "runs" bar is drawn only on a terminal; the log
    gets the plain per-run lines."""
    argv = ["compare", "--methods", "static", "--seeds", "0,1", "--epochs", "1", "--max-train-samples", "64",
            "--max-test-samples", "32", "--batch-size", "32", "--jobs", "2", "--out", str(tmp_path / "g")]
    capfd.readouterr()
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "[2/2 finished]" in out
    assert "runs:" not in err and "\r" not in err and "it/s" not in err
