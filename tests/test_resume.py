"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dstbench.runs.rundir import RunDir
from tests.kill import sigkill_at_first_checkpoint

ARGS = [
    "train", "--preset", "quick", "--method", "rigl", "--epochs", "4", "--seed", "3",
    "--hp", "delta_t=5", "--batch-size", "32", "--quiet",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dstbench.cli", *args]


def _metrics(run: Path) -> list[dict[str, float]]:
    keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "topology_updates", "itop_rate")
    return [{k: row[k] for k in keep} for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    small = ["--max-train-samples", "384", "--max-test-samples", "128"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_cli(*ARGS, *small, "--out", str(reference)), check=True, timeout=300)

    sigkill_at_first_checkpoint(subprocess.Popen(_cli(*ARGS, *small, "--out", str(killed))), killed)
    assert not (killed / "summary.json").exists()
    epochs_done = int(RunDir(killed).load_checkpoint()["epoch"]) + 1  # metrics.jsonl may be one epoch behind
    assert 1 <= epochs_done < 4

    subprocess.run(_cli(*ARGS, *small, "--out", str(killed), "--resume"), check=True, timeout=300)

    assert _metrics(killed) == _metrics(reference)
    ref_state = torch.load(reference / "checkpoint.pt", weights_only=False)["model"]
    new_state = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    assert ref_state.keys() == new_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], new_state[key]), key
    ref_topology = [json.loads(line) for line in (reference / "topology.jsonl").read_text().splitlines()]
    new_topology = [json.loads(line) for line in (killed / "topology.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(new_topology) == strip(ref_topology)


TINY_RUN = ["train", "--preset", "quick", "--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "32",
            "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run(_cli(*TINY_RUN, "--out", str(run)), check=True, timeout=300)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_resume_refuses_a_different_config(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    result = subprocess.run(_cli(*TINY_RUN, "--out", str(run), "--resume", "--lr", "0.5"), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"dstbench: error: --resume with a different config: lr was 0.05, now 0.5 ({run})"
    )


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x80\x04K\x01."])
def test_unreadable_checkpoint_is_a_clear_error(finished_run: Path, tmp_path: Path, content: bytes) -> None:
    run = _copy(finished_run, tmp_path)
    (run / "checkpoint.pt").write_bytes(content)
    result = subprocess.run(_cli(*TINY_RUN, "--out", str(run), "--resume"), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "checkpoint" in result.stderr and "Traceback" not in result.stderr
