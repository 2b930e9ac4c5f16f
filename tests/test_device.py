"""``--device auto``: CUDA when there is one, else the CPU, said once per command (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dstbench.cli.app import main
from dstbench.config import TrainConfig, resolve_config
from dstbench.core.errors import ConfigError
from dstbench.train.distributed import describe_device, device_line, resolve_device


def test_auto_is_the_default_and_picks_cuda_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrainConfig().device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="^device 'cuda' requested but CUDA is not available; use --device cpu"):
        resolve_device("cuda")


def test_the_device_is_described_by_name_or_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA Fake {index}")
    assert describe_device(torch.device("cuda:1"), 4) == "cuda:1 (NVIDIA Fake 1)"
    assert describe_device(torch.device("cpu"), 2) == "cpu (2 threads)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_line(["auto"], 1) == "device: cuda:0 (NVIDIA Fake 0)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_line(["auto"], 1) == "device: cpu (1 thread)"


def test_an_unknown_device_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^unknown device 'tpu'; choose from auto, cpu, cuda, cuda:N$"):
        resolve_config("quick", None, {"device": "tpu"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_compare_says_the_device_once_not_once_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--methods", "set,static", "--seeds", "0", "--epochs", "1", "--max-train-samples", "32",
            "--max-test-samples", "16", "--batch-size", "16", "--out", str(tmp_path / "grid")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("device:")] == ["device: cpu (1 thread)"]
