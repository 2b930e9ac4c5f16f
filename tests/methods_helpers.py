"""Shared by the DSR / Deep-R / LT tests: a two-layer crafted engine and an in-process kill-and-resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.rundir import RunDir
from dstbench.train.loop import train
from tests.helpers import build_engine


def crafted_engine(
    method: str,
    layers: list[tuple[list[float], list[int]]],
    hp: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    steps_per_epoch: int = 10,
    epochs: int = 100,
) -> SparseEngine:
    """Two 1x10 linear layers (20 parameters) with crafted weights and active positions."""
    model = nn.Sequential(nn.Linear(10, 1, bias=False), nn.Linear(10, 1, bias=False))
    total = sum(len(active) for _, active in layers)
    engine = build_engine(
        method, 1 - total / 20, hp=hp, model=model, optimizer=optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs, min_active=0
    )
    assert sum(layer.k for layer in engine.sparse_layers) == total
    for layer, (weights, active) in zip(engine.sparse_layers, layers):
        mask = torch.zeros(1, 10, dtype=torch.bool)
        mask[0, active] = True
        layer.mask.copy_(mask)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([weights]) * mask)
    return engine


def active_positions(engine: SparseEngine) -> list[list[int]]:
    return [torch.nonzero(layer.mask[0]).flatten().tolist() for layer in engine.sparse_layers]


SMALL = {"synthetic_train_samples": 256, "synthetic_test_samples": 64}


def quick_config(method: str, out: Path, epochs: int = 1, hp: dict[str, Any] | None = None, **fields: Any) -> Any:
    return resolve_config("quick", overrides={"method": method, "epochs": epochs, "out": str(out), **SMALL, **fields}, hp=hp)


class _Killed(Exception):
    pass


def assert_resume_is_bit_identical(method: str, tmp_path: Path, hp: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs straight vs. killed after the first epoch's checkpoint and resumed: same numbers."""
    reference = train(quick_config(method, tmp_path / "reference", 2, hp), progress=False)
    original = RunDir.save_checkpoint

    def save_then_die(self: RunDir, state: dict[str, Any]) -> None:
        original(self, state)
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "save_checkpoint", save_then_die)
        with pytest.raises(_Killed):
            train(quick_config(method, tmp_path / "killed", 2, hp), progress=False)
    resumed = train(quick_config(method, tmp_path / "killed", 2, hp), resume=True, progress=False)
    for key in ("test_acc", "train_loss", "test_loss", "topology_updates", "itop_rate", "method_report"):
        assert resumed[key] == reference[key], key
    ref = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=False)["model"]
    new = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["model"]
    for key in ref:
        assert torch.equal(ref[key], new[key]), key
