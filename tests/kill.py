"""The one way a test kills a training run in its own process: an interrupt at a chosen point.

A ``KeyboardInterrupt`` is what SIGINT (and, through the CLI's handler, SIGTERM) raises in the
process, so the run ends exactly as a user's Ctrl-C would: ``train`` raises it, ``main`` prints one
line and returns 130. A test of a run in another process kills it with a real SIGKILL at its first
checkpoint (:func:`sigkill_at_first_checkpoint`); ``tests/fault_trials.py`` kills forked runs at
random times and at every file write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
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


def sigkill_at_first_checkpoint(proc: subprocess.Popen[Any], run: Path, *, group: bool = False, timeout: float = 240) -> None:
    """SIGKILL a training process (``group``: its whole process group, e.g. torchrun and its ranks) as
    soon as the first checkpoint of ``run`` is on disk; fails if it finished first."""
    deadline = time.monotonic() + timeout
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
