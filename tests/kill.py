"""The one way a test kills a training run in its own process: an interrupt at a chosen point.

A ``KeyboardInterrupt`` is what SIGINT (and, through the CLI's handler, SIGTERM) raises in the
process, so the run ends exactly as a user's Ctrl-C would: ``train`` raises it, ``main`` prints one
line and returns 130. Real signals to real processes (SIGKILL at random times and at every file
write) are tested by ``tests/fault_trials.py`` and ``tests/test_resume.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from dstbench.runs.rundir import RunDir
from dstbench.train.guard import DivergenceGuard


@contextlib.contextmanager
def interrupted(*, after_checkpoint: int | None = None, in_epoch: int | None = None) -> Iterator[None]:
    """Inside the block, a run is interrupted either right after its ``after_checkpoint``-th checkpoint
    reached the disk (its metrics and topology files not yet written: resuming repairs them), or at the
    first step of epoch ``in_epoch`` (counted from 1; the checkpoint holds the epoch before)."""
    if (after_checkpoint is None) == (in_epoch is None):
        raise ValueError("give exactly one of after_checkpoint and in_epoch")
    with pytest.MonkeyPatch.context() as patch:
        if after_checkpoint is not None:
            save, saved = RunDir.save_checkpoint, [0]

            def save_then_die(self: RunDir, state: dict[str, Any]) -> None:
                save(self, state)
                saved[0] += 1
                if saved[0] == after_checkpoint:
                    raise KeyboardInterrupt

            patch.setattr(RunDir, "save_checkpoint", save_then_die)
        else:
            record = DivergenceGuard.record  # called at every step, with its epoch

            def die_in_epoch(self: DivergenceGuard, loss: torch.Tensor, epoch: int, step: int) -> None:
                if epoch + 1 == in_epoch:
                    raise KeyboardInterrupt
                record(self, loss, epoch, step)

            patch.setattr(DivergenceGuard, "record", die_in_epoch)
        yield


def train_until_interrupted(cfg: Any, *, after_checkpoint: int | None = None, in_epoch: int | None = None) -> None:
    """Train ``cfg`` and interrupt it at the given point (see :func:`interrupted`); fails if it finished."""
    from dstbench.train.loop import train

    with interrupted(after_checkpoint=after_checkpoint, in_epoch=in_epoch), pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
