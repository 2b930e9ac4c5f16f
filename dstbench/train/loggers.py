"""Experiment loggers: TensorBoard and Weights & Biases (offline), both optional extras.

The run directory stays the record (``metrics.jsonl``, ``topology.jsonl``); a logger mirrors it into
the tool researchers already watch. What is logged:

* per epoch, at the optimizer step that ends it: ``epoch/<name>`` for every number in the epoch's
  metrics row (losses, accuracies, learning rate, epoch time, mask-update seconds, per-step method
  seconds, updates so far, ITOP rate);
* per topology update, at its step: ``topology/iou`` (global, against the replaced mask),
  ``topology/turnover`` (grown / active weights), ``topology/grown``, ``topology/dropped`` and
  ``topology/update_ms`` (the update's own wall time: the mask-update overhead).

``pip install 'dstbench[tensorboard]'`` or ``'dstbench[wandb]'``; asking for a logger whose package is
missing is a one-line error before training starts. W&B runs in offline mode only (nothing leaves
the machine; ``wandb sync`` uploads later), writing under ``<run>/wandb``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dstbench.core.errors import ConfigError
from dstbench.engine.topology import TopologyRecord

__all__ = ["LOGGERS", "Logger", "create_logger", "update_scalars"]

LOGGERS = ("none", "tensorboard", "wandb")


class Logger(Protocol):
    def log_epoch(self, row: Mapping[str, Any]) -> None: ...

    def log_updates(self, records: Sequence[TopologyRecord]) -> None: ...

    def close(self) -> None: ...


def update_scalars(record: TopologyRecord) -> dict[str, float]:
    """The numbers logged for one topology update."""
    active = sum(change.active for change in record.layers.values())
    return {
        "topology/iou": record.iou,
        "topology/turnover": record.grown / active if active else 0.0,
        "topology/grown": float(record.grown),
        "topology/dropped": float(record.dropped),
        "topology/update_ms": 1000.0 * record.seconds,
    }


def _epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    return {f"epoch/{k}": float(v) for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, (int, float))}


class TensorBoardLogger:
    """``torch.utils.tensorboard.SummaryWriter`` into ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--logger tensorboard needs the tensorboard package: pip install 'dstbench[tensorboard]'") from None
        # On resume, events logged after the checkpoint (by the killed process) are discarded.
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        for tag, value in _epoch_scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["step"]))
        self.writer.flush()

    def log_updates(self, records: Sequence[TopologyRecord]) -> None:
        for record in records:
            for tag, value in update_scalars(record).items():
                self.writer.add_scalar(tag, value, global_step=record.step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """``wandb.init(mode="offline")`` into ``<run>/wandb``, the run's config as W&B config."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--logger wandb needs the wandb package: pip install 'dstbench[wandb]'") from None
        self.run = wandb.init(
            mode="offline", dir=str(run_dir), project="dstbench", name=run_dir.name, config=dict(config), reinit=True
        )

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        self.run.log(_epoch_scalars(row), step=int(row["step"]))

    def log_updates(self, records: Sequence[TopologyRecord]) -> None:
        for record in records:
            self.run.log(update_scalars(record), step=record.step)

    def close(self) -> None:
        self.run.finish()


class _NoLogger:
    def log_epoch(self, row: Mapping[str, Any]) -> None:
        pass

    def log_updates(self, records: Sequence[TopologyRecord]) -> None:
        pass

    def close(self) -> None:
        pass


def create_logger(name: str, run_dir: str | Path, config: Mapping[str, Any], *, resume_step: int | None = None) -> Logger:
    """The logger called ``name`` (one of :data:`LOGGERS`) for one run."""
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
    path = Path(run_dir)
    if name == "tensorboard":
        return TensorBoardLogger(path, resume_step)
    if name == "wandb":
        return WandbLogger(path, config)
    return _NoLogger()
