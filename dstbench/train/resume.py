"""Opening a run folder: refuse a finished or different run, continue a started one, start a new one.

"Resume if a checkpoint exists" lives here (:func:`started`, and ``train(cfg, resume="auto")``), for
every caller that trains a run it may have started before (grids, the lottery-ticket pipeline).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dstbench.config import TrainConfig
from dstbench.core.errors import CheckpointError, ConfigError, DstbenchError
from dstbench.runs.integrity import code_version
from dstbench.runs.reuse import check_same_run
from dstbench.runs.rundir import RunDir, check_output_dir
from dstbench.train.checkpoint import History, restore_checkpoint
from dstbench.train.distributed import Platform
from dstbench.train.setup import Training

__all__ = ["open_run", "resume_from", "start_fresh", "started"]
log = logging.getLogger(__name__)


def started(out: str | Path) -> bool:
    """Whether ``out`` holds a started run to continue (it has a checkpoint)."""
    return RunDir(out).checkpoint.exists()


def open_run(cfg: TrainConfig, platform: Platform, resume: bool) -> tuple[RunDir, dict[str, Any] | None]:
    """The run folder and, with ``resume``, its verified checkpoint (None: nothing to continue)."""
    run = platform.run_dir(cfg.out)
    check_output_dir(cfg.out)
    run.refuse_links()  # before anything is read or removed: a link would reach another run's files
    if resume:
        state = _open_for_resume(run, cfg, platform)
    elif os.path.lexists(run.checkpoint) or os.path.lexists(run.summary):
        raise ConfigError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
    else:
        state = None
    if platform.is_main:  # only once the run is accepted: a refused command leaves the folder as it was
        run.clean_orphans()
    return run, state


def _open_for_resume(run: RunDir, cfg: TrainConfig, platform: Platform) -> dict[str, Any] | None:
    """The verified checkpoint of the run in ``cfg.out`` if it is this run; None if it has none yet.

    Nothing is written here: a damaged checkpoint or a different config ends with one line and the
    folder exactly as it was. A run killed before its first checkpoint has nothing to continue, so it
    starts from scratch (unless its config says it was a different run).
    """
    if not run.checkpoint.exists():
        if run.summary.exists():
            raise CheckpointError(
                f"{run.checkpoint} is missing from a finished run (its results are in {run.summary.name}); "
                "nothing to resume: use another --out to train it again"
            )
        if run.config.exists():
            try:
                saved = run.read_json(run.config)
            except DstbenchError:
                saved = None  # damaged, and there is no checkpoint to protect: start over
            if saved is not None:  # nothing trained yet, so only the config can make it a different run
                check_same_run(run.path, saved, code_version(), cfg, resume=True)
        log.warning("%s has no checkpoint yet (killed before its first epoch ended): starting it from scratch", run.path)
        return None
    state = run.load_checkpoint(platform.device)
    saved_config = state.get("config")
    if saved_config is None:  # legacy checkpoint: the config lives in config.json only
        saved_config = run.read_json(run.config)
    check_same_run(run.path, saved_config, state.get("code_version"), _with_saved_threads(run, saved_config, cfg), resume=True)
    return state


def _with_saved_threads(run: RunDir, saved: dict[str, Any], cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the thread count the run was started with, after a warning if this resume runs with
    another: the run continues correctly, but its low bits drift from the uninterrupted run's."""
    from dstbench.runs.configs import flat_config

    was = flat_config(saved).get("threads")
    if was == cfg.threads:
        return cfg
    started_with = "an unrecorded thread count (it predates --threads)" if was is None else f"--threads {was}"
    log.warning(
        "%s was started with %s and resumes with --threads %d: its numbers will differ in the low bits from an "
        "uninterrupted run's", run.path, started_with, cfg.threads,
    )  # fmt: skip
    # Checked as if resumed with the recorded count (an old folder: the default its config reads with).
    return dataclasses.replace(cfg, threads=TrainConfig.threads if was is None else was)


def start_fresh(t: Training) -> History:
    """A new run: clear what an earlier attempt left, write config and plan, choose the initial masks."""
    run, cfg = t.run, t.cfg
    history = History(config=cfg.to_json())
    stale = [run.metrics, run.topology, run.summary, *sorted(run.masks_dir.glob("*.npz"))]
    run.remove([path for path in stale if path.exists()])
    run.start_run(history.config)
    run.write_config(history.config)
    run.write_plan(t.plan)
    init_batch = next(iter(t.data.train)) if t.engine.updater.needs.init_batch else None
    t.engine.initialize(init_batch)
    t.recipe.start(t.model)
    if cfg.save_rewind_step == 0:
        run.save_rewind(0, t.model.state_dict())
    return history


def resume_from(t: Training, state: dict[str, Any], *, progress: bool) -> History:
    """Continue from a checkpoint; the files derived from it are brought up to date."""
    history = restore_checkpoint(t, state)
    if progress:
        done, total = history.epochs_done, t.cfg.epochs
        where = "all epochs are done; writing its summary" if done >= total else f"from epoch {done + 1}/{total}"
        tqdm.write(f"[{t.cfg.method}] resuming {t.run.path}: {where}")
    _rewrite_derived(t, history)
    return history


def _rewrite_derived(t: Training, history: History) -> None:
    """Rewrite config, plan, metrics and topology from the checkpoint, and say which ones were damaged.

    A file behind the checkpoint (a kill between the checkpoint and its write) is simply brought up to
    date; a damaged one is named. Mask snapshots cannot be rebuilt: a damaged one is an error.
    """
    run, engine = t.run, t.engine
    steps = [record.step for record in engine.records]
    snapshots = run.verify_snapshots(steps)
    keep = {path.name for path in run.snapshot_paths(steps)}
    run.remove(sorted(p for p in run.masks_dir.glob("*.npz") if p.name not in keep))  # from an epoch lost to a kill
    for path in (run.config, run.plan, run.metrics, run.topology, run.summary):
        try:
            if path.suffix == ".jsonl":
                run.read_jsonl(path)
            elif path.exists():
                run.read_json(path)
        except DstbenchError as exc:
            log.warning("repairing %s from the checkpoint (%s)", path.name, exc)
    run.keep_or_start_manifest()
    run.list_snapshots(snapshots)
    run.write_config(history.config)
    run.write_plan(t.plan)
    run.write_metrics(history.metrics)
    run.write_topology(engine.records)
