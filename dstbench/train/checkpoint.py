"""What a checkpoint holds and how it is read back: written after every epoch, so a killed run
continues from its last finished epoch to exactly the numbers an uninterrupted run reaches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dstbench import __version__
from dstbench.core.errors import CheckpointError
from dstbench.runs.integrity import code_version
from dstbench.train.setup import Training

__all__ = ["History", "restore_checkpoint", "save_checkpoint"]


@dataclass
class History:
    """What the run has done so far, besides its tensors: kept in the checkpoint."""

    config: dict[str, Any]  # as written to config.json when the run started (a resumed run keeps it)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs_done: int = 0
    resumed: bool = False


def save_checkpoint(t: Training, epoch: int, history: History) -> None:
    t.run.save_checkpoint(
        {
            "epoch": epoch,
            "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "engine": t.engine.state_dict(),
            **t.recipe.state_dict(),
            "metrics": history.metrics,
            "train_seconds": history.train_seconds,
            "torch_rng": torch.get_rng_state(),
            "version": __version__,
            **t.platform.checkpoint_state(),
            "code_version": code_version(),
            "config": history.config,
        }
    )


def restore_checkpoint(t: Training, state: dict[str, Any]) -> History:
    """Model, optimizer, engine (masks, records, method state) and RNG from ``state``; its history."""
    try:
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.engine.load_state_dict(state["engine"])
        t.recipe.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {t.run.checkpoint} does not match this run: {exc}") from None
    torch.set_rng_state(state["torch_rng"])
    t.platform.load_checkpoint_state(state)
    return History(
        config=state.get("config") or t.run.read_json(t.run.config),  # legacy: config.json only
        metrics=state["metrics"],
        train_seconds=float(state["train_seconds"]),
        epochs_done=int(state["epoch"]) + 1,
        resumed=True,
    )
