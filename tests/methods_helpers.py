"""Shared by the DSR / Deep-R / LT tests: a two-layer crafted engine and a quick run config.

(Resume is checked for every registered method by tests/test_methods_contract.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.engine.sparse_engine import SparseEngine
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
