"""The training loop, top to bottom in one screen (nanoGPT style); each piece it calls has its module.

One run = one :class:`~dstbench.config.TrainConfig` into one run directory. Checkpoints are written
atomically after every epoch; a resumed run restores model, optimizer, engine and method state and
continues to exactly the numbers an uninterrupted run reaches on CPU (data order, augmentation and
mask randomness are all seeded by (seed, epoch/step), never by global RNG state).

setup.py builds the run, resume.py opens its folder, steppers.py (and compiled.py) run its steps,
guard.py stops a diverging run, checkpoint.py and summary.py write what it did, distributed.py says
which rank does what.
"""

from __future__ import annotations

from typing import Any, Literal

from dstbench.config import TrainConfig
from dstbench.core.updater import MaskUpdater
from dstbench.runs.integrity import code_version
from dstbench.runs.lock import run_lock
from dstbench.runs.rundir import check_output_dir
from dstbench.train.checkpoint import save_checkpoint
from dstbench.train.distributed import Platform, platform_from_env, resolve_device
from dstbench.train.epoch import EpochReporter, EpochTally, batches, evaluate
from dstbench.train.guard import DivergenceGuard
from dstbench.train.resume import open_run, resume_from, start_fresh, started
from dstbench.train.setup import build, build_model, build_optimizer, check_arguments, data_config, lr_at, set_lr
from dstbench.train.steppers import make_stepper
from dstbench.train.summary import finish
from dstbench.train.torch_logs import quiet_compile_warnings

__all__ = ["train", "data_config", "build_model", "build_optimizer", "evaluate", "lr_at", "resolve_device"]


def train(cfg: TrainConfig, *, resume: bool | Literal["auto"] = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``cfg.out`` and return its summary (one rank of it under torchrun).

    ``resume=True`` continues the run there; ``"auto"`` continues it if it was started (it has a
    checkpoint) and starts it otherwise: what a grid or pipeline that may be rerun wants.
    """
    cfg.validate()
    # Fix the code version now (it is cached per process): the code this process imported is what
    # trains, and a commit made while it runs must not be recorded as the code of this run.
    code_version()
    platform = platform_from_env(cfg.device)
    try:
        resuming = started(cfg.out) if resume == "auto" else resume
        return _train(cfg, platform, resume=resuming, progress=progress and platform.is_main)
    finally:
        platform.shutdown()


def _train(cfg: TrainConfig, platform: Platform, *, resume: bool, progress: bool) -> dict[str, Any]:
    """One writer per folder: the lock is held from before the folder is looked at until the summary."""
    updater = check_arguments(cfg, platform)  # a typo is reported before the state of the folder
    check_output_dir(cfg.out)
    with run_lock(cfg.out, "--resume" if resume else "train", enabled=platform.is_main):
        return _train_locked(cfg, platform, updater, resume=resume, progress=progress)


def _train_locked(
    cfg: TrainConfig, platform: Platform, updater: MaskUpdater, *, resume: bool, progress: bool
) -> dict[str, Any]:
    run, state = open_run(cfg, platform, resume)
    t = build(cfg, platform, updater, run)
    history = resume_from(t, state, progress=progress) if state is not None else start_fresh(t)
    quiet_compile_warnings()
    stepper = make_stepper(t)  # after resuming: compiled code and a captured graph see the restored tensors
    guard = DivergenceGuard.for_device(run, t.device)
    reporter = EpochReporter(t, history, progress)
    for epoch in range(history.epochs_done, cfg.epochs):
        tally = EpochTally(t)
        t.model.train()
        for micro, (step, last_micro, x, y) in enumerate(batches(t, epoch, progress)):
            set_lr(t.optimizer, t.lr(step))
            loss, logits = stepper.step(*t.recipe.mix(x, y, epoch, micro), step, last_micro)
            if last_micro:
                t.recipe.after_step(t.model)
            guard.record(loss, epoch, step)
            tally.add(loss, logits, y)
            if last_micro and step + 1 == cfg.save_rewind_step:
                run.save_rewind(step + 1, t.model.state_dict())
        guard.check(epoch)  # before anything of this epoch is written
        history.train_seconds += tally.stop()
        platform.average_buffers(t.model)  # every rank evaluates and saves the same model
        row = tally.row(t, epoch, evaluate(t.model, t.data.test, cfg, t.device, platform))
        if t.recipe.ema is not None:
            row["ema_test_loss"], row["ema_test_acc"] = evaluate(t.recipe.ema.module, t.data.test, cfg, t.device, platform)
        history.metrics.append(row)
        reporter.epoch(row)
        # The checkpoint first: metrics and topology are never ahead of it (a kill in between leaves
        # them one epoch behind, and a resumed run rewrites them from the checkpoint).
        save_checkpoint(t, epoch, history)
        run.write_metrics(history.metrics)
        run.write_topology(t.engine.records)
    reporter.close()
    return finish(t, history, stepper.report())
