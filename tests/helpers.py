"""Small models and a manual training loop for engine-level tests (no data package needed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.core.updater import MaskUpdater
from dstbench.engine.sparse_engine import SparseEngine


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


def build_engine(
    updater: MaskUpdater | str,
    sparsity: float = 0.8,
    distribution: str = "uniform",
    dense_layers: str = "none",
    *,
    hp: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    optimizer: str | torch.optim.Optimizer | None = "sgd",
    steps_per_epoch: int = 5,
    epochs: int = 4,
    seed: int = 0,
    min_active: int = 1,
    inputs: dict[str, Any] | None = None,
    initialize: bool = True,
) -> SparseEngine:
    """The one engine builder of the tests: a method (object, or registered name with ``hp``) on a model
    (default :class:`SmallNet`, seeded by ``seed``) with a plan and an optimizer (``"sgd"``, ``"adam"``,
    an optimizer object, or None), initialised unless ``initialize=False``."""
    if isinstance(updater, str):
        updater = create_updater(updater, hp or {})
    if model is None:
        torch.manual_seed(seed)
        model = SmallNet()
    plan = plan_sparsity(
        describe_layers(model), sparsity if updater.needs.sparse else 0.0, distribution, dense_layers, min_active=min_active
    )
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    elif optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    assert optimizer is None or isinstance(optimizer, torch.optim.Optimizer)
    engine = SparseEngine(
        model, plan, updater, optimizer, seed=seed, steps_per_epoch=steps_per_epoch, total_epochs=epochs, inputs=inputs
    )
    if initialize:
        engine.initialize()
    return engine


def make_harness(updater: MaskUpdater, sparsity: float = 0.8, distribution: str = "uniform", dense_layers: str = "none", **options: Any) -> Harness:
    """:func:`build_engine` with a seeded :class:`SmallNet` and an optimizer, plus a step on random data."""
    engine = build_engine(updater, sparsity, distribution, dense_layers, **options)
    assert engine.optimizer is not None
    return Harness(engine.model, engine.optimizer, engine)


def step_engine(
    engine: SparseEngine,
    step: int,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    train: bool = False,
    at_optimizer: Callable[[], None] | None = None,
) -> None:
    """``engine.step`` for tests that set weights, gradients and optimizer state by hand: the optimizer's
    own step is left out unless ``train``, and ``at_optimizer`` runs where it would be taken (to check
    what the engine hands the optimizer). Without an optimizer this is ``engine.step``."""
    optimizer = engine.optimizer
    if optimizer is None:
        assert at_optimizer is None, "at_optimizer needs an engine with an optimizer"
        engine.step(step, batch)
        return
    original = optimizer.step

    def replaced(*args: Any, **kwargs: Any) -> Any:
        if at_optimizer is not None:
            at_optimizer()
        return original(*args, **kwargs) if train else None

    optimizer.step = replaced  # type: ignore[method-assign]
    try:
        engine.step(step, batch)
    finally:
        del optimizer.step
