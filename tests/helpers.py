"""Small models and a manual training loop for engine-level tests (no data package needed)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.layers import describe_layers
from dstbench.core.updater import MaskUpdater


class SmallNet(nn.Module):
    def __init__(self, c1: int = 4, c2: int = 6, k: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, c1, k, padding=k // 2, bias=True)
        self.bn = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 1, bias=False)
        self.fc = nn.Linear(c2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


@dataclass
class Harness:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    engine: SparseEngine

    def step(self, step: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        x = torch.randn(8, 2, 5, 5, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.engine.step(step, (x, y))
        self.optimizer.zero_grad(set_to_none=True)


def make_harness(
    updater: MaskUpdater,
    sparsity: float = 0.8,
    distribution: str = "uniform",
    dense_layers: str = "none",
    *,
    model: nn.Module | None = None,
    optimizer: str = "sgd",
    steps_per_epoch: int = 5,
    epochs: int = 4,
    seed: int = 0,
) -> Harness:
    torch.manual_seed(seed)
    model = model or SmallNet()
    plan = plan_sparsity(describe_layers(model), sparsity if updater.needs.sparse else 0.0, distribution, dense_layers)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    engine = SparseEngine(model, plan, updater, opt, seed=seed, steps_per_epoch=steps_per_epoch, total_epochs=epochs)
    engine.initialize()
    return Harness(model, opt, engine)
