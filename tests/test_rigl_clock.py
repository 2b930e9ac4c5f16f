"""RigL's drop fraction at every update equals google-research/rigl's closed form at the global step
the update fired on (``sparse_optimizers.py``: ``is_mask_update_iter(global_step)`` and
``get_drop_fraction(global_step, ...)`` = ``tf.compat.v1.train.cosine_decay(alpha, g, end_step)``),
on the eager path and the compiled one. Before the fix the engine showed the update a clock that had
already counted that step's skipped optimizer step, so the fraction was TF's at ``g - 1``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.core.context import UpdateContext
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.methods.rigl import RigL
from dstbench.train.loop import train


def tf_drop_fraction(alpha: float, global_step: int, end_step: int) -> float:
    """``tf.compat.v1.train.cosine_decay(alpha, g, end_step)`` (alpha 0): RigL's ``get_drop_fraction``."""
    progress = min(global_step, end_step) / end_step
    return 0.5 * alpha * (1.0 + math.cos(math.pi * progress))


def tf_updates(delta_t: int, end_step: int, total: int) -> list[tuple[int, int]]:
    """(iteration, global step) of TF RigL's mask updates: g = 0, delta_t, ... <= end_step; each
    earlier update took one iteration without advancing g, so the one at g = j * delta_t runs at
    iteration j * delta_t + j."""
    return [(g + j, g) for j, g in enumerate(range(0, end_step + 1, delta_t)) if g + j < total]


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []
    original = RigL.drop_fraction_at

    def recorded(self: Any, ctx: UpdateContext) -> float:
        fraction = float(original(self, ctx))
        seen.append((ctx.info.step, fraction))
        return fraction

    monkeypatch.setattr(RigL, "drop_fraction_at", recorded)
    return seen


def test_eager_drop_fraction_is_tfs_at_the_global_step_the_update_fired_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's reproduction: Linear 16x16, s=0.5, alpha 0.3, delta_t 5, t_end 1, 10 x 3 steps."""
    seen = _recording(monkeypatch)
    torch.manual_seed(0)
    model = nn.Linear(16, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = create_updater("rigl", {"drop_fraction": "0.3", "delta_t": "5", "t_end": "1.0"})
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none")
    engine = SparseEngine(model, plan, updater, optimizer, steps_per_epoch=10, total_epochs=3)
    engine.initialize()
    for step in range(30):
        model(torch.randn(4, 16)).sum().backward()
        engine.step(step)
        optimizer.zero_grad()
    expected = [(t, tf_drop_fraction(0.3, g, 30)) for t, g in tf_updates(5, 30, 30)]
    assert [t for t, _ in seen] == [t for t, _ in expected] == [0, 6, 12, 18, 24]
    assert [f for _, f in seen] == pytest.approx([f for _, f in expected], abs=1e-12)
    # The numbers: after step 6 (g = 5) 0.279904, after step 12 (g = 10) 0.225.
    assert seen[1][1] == pytest.approx(0.2799038, abs=1e-6) and seen[2][1] == pytest.approx(0.225, abs=1e-12)
    assert engine.skipped_steps == 5


def test_count_mask_steps_keeps_its_own_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``count_mask_steps=true`` (dstbench 0.1): updates after steps 0, 5, 10, ... at clock t, unchanged."""
    seen = _recording(monkeypatch)
    torch.manual_seed(0)
    model = nn.Linear(16, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hp = {"drop_fraction": "0.3", "delta_t": "5", "t_end": "1.0", "count_mask_steps": "true"}
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none")
    engine = SparseEngine(model, plan, create_updater("rigl", hp), optimizer, steps_per_epoch=10, total_epochs=3)
    engine.initialize()
    for step in range(30):
        model(torch.randn(4, 16)).sum().backward()
        engine.step(step)
        optimizer.zero_grad()
    assert [t for t, _ in seen] == [0, 5, 10, 15, 20, 25]
    assert [f for _, f in seen] == pytest.approx([tf_drop_fraction(0.3, t, 30) for t, _ in seen], abs=1e-12)


def test_compiled_drop_fraction_is_tfs_at_the_global_step_the_update_fired_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled stepper runs update steps through ``engine.step``: same clock, same fractions."""
    seen = _recording(monkeypatch)
    small = {"epochs": 2, "batch_size": 32, "synthetic_train_samples": 256, "synthetic_test_samples": 64}
    hp = {"delta_t": 3, "t_end": 1.0, "drop_fraction": 0.3}
    cfg = resolve_config("quick", None, {**small, "method": "rigl", "compile": True, "out": str(tmp_path)}, hp)
    summary = train(cfg, progress=False)
    assert summary["compile"]["fast_steps"] >= 8  # the plain steps really ran compiled
    total = 16  # 256 / 32 = 8 steps per epoch, 2 epochs
    expected = [(t, tf_drop_fraction(0.3, g, total)) for t, g in tf_updates(3, total, total)]
    assert [t for t, _ in seen] == [t for t, _ in expected] == [0, 4, 8, 12]
    assert [f for _, f in seen] == pytest.approx([f for _, f in expected], abs=1e-12)
