"""The pieces of one epoch around the step: its batches, its running sums, its metrics row, evaluation."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dstbench.config import TrainConfig
from dstbench.train.checkpoint import History
from dstbench.train.distributed import Platform
from dstbench.train.loggers import create_logger
from dstbench.train.setup import Training, get_lr

__all__ = ["EpochReporter", "EpochTally", "autocast", "batches", "evaluate"]


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast for ``--amp`` on CUDA; nothing otherwise."""
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batches(t: Training, epoch: int, progress: bool) -> Iterator[tuple[int, bool, torch.Tensor, torch.Tensor]]:
    """(global optimizer step, last micro-batch of that step?, x, y) for every micro-batch of ``epoch``,
    with a progress bar on a terminal (redirected output gets the epoch lines only)."""
    loader, accum = t.data.train, t.cfg.grad_accum
    loader.set_epoch(epoch)
    n = len(loader)
    bar = tqdm(
        loader,
        total=n,
        desc=f"{t.cfg.method} epoch {epoch + 1}/{t.cfg.epochs}",
        disable=not progress or not sys.stderr.isatty(),
        leave=False,
    )
    for i, (x, y) in enumerate(bar):
        yield epoch * t.steps_per_epoch + i // accum, (i + 1) % accum == 0 or i + 1 == n, x, y


class EpochTally:
    """One epoch's training loss and accuracy, summed on the device (no host sync per step) and read
    once at the end; also the epoch's wall time and the engine's share of it."""

    def __init__(self, t: Training) -> None:
        self.engine = t.engine
        self.started = time.perf_counter()
        self.updates_before = t.engine.update_seconds
        self.hooks_before = t.engine.step_hook_seconds
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=t.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=t.device)
        self.seen = 0
        self.seconds = 0.0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach().double() * y.numel()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += y.numel()

    def stop(self) -> float:
        """End the epoch's clock (before evaluation); returns the training seconds."""
        self.seconds = time.perf_counter() - self.started
        return self.seconds

    def row(self, t: Training, epoch: int, test: tuple[float, float]) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (sums over every rank)."""
        train_loss, train_acc = t.platform.means(self.loss_sum, self.correct, self.seen)
        return {
            "epoch": epoch + 1,
            "step": (epoch + 1) * t.steps_per_epoch,
            "lr": get_lr(t.optimizer),
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test[0],
            "test_acc": test[1],
            "epoch_seconds": self.seconds,
            "update_seconds": self.engine.update_seconds - self.updates_before,
            "step_hook_seconds": self.engine.step_hook_seconds - self.hooks_before,
            "topology_updates": len(self.engine.records),
            "itop_rate": self.engine.itop_rate(),
        }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, cfg: TrainConfig, device: torch.device, platform: Platform | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy) on a loader (summed over the ranks' shards in a DDP run)."""
    model.eval()
    total = 0
    # Running sums stay on the device: one host sync per evaluation, not one per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in loader:
        with autocast(cfg, device):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        total += y.numel()
    return (platform or Platform(device)).means(loss_sum, correct, total)


class EpochReporter:
    """Each epoch to the run's logger (its new topology updates, then its metrics row) and, with
    ``progress``, as one line."""

    def __init__(self, t: Training, history: History, progress: bool) -> None:
        self.t = t
        self.progress = progress
        resume_step = history.epochs_done * t.steps_per_epoch if history.resumed else None
        self.logger = create_logger(t.cfg.logger, t.run.path, t.cfg.to_json(), resume_step=resume_step)
        self.logged = len(t.engine.records) if history.resumed else 0  # a new run logs its initial update too

    def epoch(self, row: dict[str, Any]) -> None:
        records = self.t.engine.records
        self.logger.log_updates(records[self.logged :])
        self.logged = len(records)
        self.logger.log_epoch(row)
        if self.progress:
            cfg = self.t.cfg
            ema = f" ema_test_acc {row['ema_test_acc']:.4f}" if "ema_test_acc" in row else ""
            tqdm.write(
                f"[{cfg.method}] epoch {row['epoch']}/{cfg.epochs} loss {row['train_loss']:.4f} "
                f"test_acc {row['test_acc']:.4f}{ema} updates {row['topology_updates']} ({row['epoch_seconds']:.1f}s)"
            )

    def close(self) -> None:
        self.logger.close()
