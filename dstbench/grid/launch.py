"""Where the runs of a grid (``compare``, ``sweep``) execute: in this process, a process pool, or SLURM.

* ``--jobs 1`` (default): one run after another in this process.
* ``--jobs N``: a ``concurrent.futures`` process pool (spawn) of N workers, one run per task;
  ``--devices cuda:0,cuda:1`` places runs round-robin (several runs may share a GPU). Every run is
  seeded on its own and uses its own ``--threads`` (part of its config), so the results are those of
  ``--jobs 1`` bit for bit. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) is
  taken by this process alone: it stops the workers' runs (each unwinds as a SIGTERM'd run does,
  leaving a resumable folder) and ends with one line.
* ``--launcher slurm``: one job per run as a submitit job array with the SLURM options given;
  ``--launcher local`` runs the very same path through submitit's local executor (what the tests use).
  A preempted or timed-out job is requeued by submitit and continues from the run's checkpoint
  (:class:`TrainJob.checkpoint`), exactly as ``--resume`` would.

Whatever executes them, finished runs are reused and interrupted ones resumed (the run folder decides),
and progress is one line per finished run plus an overall bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dstbench.config import TrainConfig
from dstbench.core.errors import ConfigError, DstbenchError
from dstbench.grid.execution import LAUNCHERS, Execution, SlurmOptions
from dstbench.grid.progress import RunState, announce_run
from dstbench.runs.rundir import RunDir

__all__ = ["Execution", "SlurmOptions", "TrainJob", "execute", "run_one"]

def run_one(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume, or reuse) one run without per-step output; return its summary."""
    from dstbench.train.loop import train

    run = RunDir(cfg.out)
    if run.is_complete():
        summary: dict[str, Any] = run.read_json(run.summary)
        return summary
    return train(cfg, resume="auto", progress=False)


class _WorkerStopped(KeyboardInterrupt):
    """SIGTERM in a pool worker: the grid was interrupted, so the run unwinds as an interrupted one."""


def _stop_run(signum: int, frame: object) -> None:
    raise _WorkerStopped(signum)


def _worker_init() -> None:
    """A pool worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group: the parent
    alone decides, then stops each worker with SIGTERM, which unwinds the run like an interrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_run)


class TrainJob:
    """A submitit job: one run. On preemption or timeout submitit calls :meth:`checkpoint` and
    requeues the returned submission; the run then continues from its own ``checkpoint.pt``.

    The run sets its own torch thread count (``--threads``, part of its config), whatever CPUs the
    job was given (``--slurm-cpus``), so a job's numbers are those of ``--jobs 1``."""

    def __call__(self, cfg: TrainConfig) -> dict[str, Any]:
        return run_one(cfg)

    def checkpoint(self, cfg: TrainConfig) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(), cfg)


def _placed(configs: Sequence[TrainConfig], devices: Sequence[str]) -> list[TrainConfig]:
    """Runs on ``devices`` round-robin (``device`` never changes a run's numbers, see RESUME_IGNORED_FIELDS)."""
    if not devices:
        return list(configs)
    return [dataclasses.replace(cfg, device=devices[i % len(devices)]) for i, cfg in enumerate(configs)]


def _finished_line(done: int, total: int, cfg: TrainConfig, summary: dict[str, Any], seconds: float) -> str:
    acc = summary.get("test_acc")
    acc_text = f"{acc:.4f}" if isinstance(acc, float) else "n/a"
    return f"[{done}/{total} finished] {Path(cfg.out).name}: test_acc {acc_text} ({seconds:.0f}s since the grid started)"


def execute(
    configs: Sequence[TrainConfig], execution: Execution | None = None, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Every run's summary, in the order of ``configs``; only unfinished runs are trained."""
    execution = execution or Execution()
    if execution.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {execution.jobs}")
    if execution.launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {execution.launcher!r}; choose from {', '.join(LAUNCHERS)}")
    configs = _placed(configs, execution.devices)
    results: list[dict[str, Any] | None] = [None] * len(configs)
    pending = []
    for i, cfg in enumerate(configs):
        run = RunDir(cfg.out)
        state: RunState = "reused" if run.is_complete() else "resuming" if run.checkpoint.exists() else "training"
        if progress and (state == "reused" or execution.jobs > 1 or execution.launcher != "none"):
            announce_run(i + 1, len(configs), cfg.method, cfg.sparsity, cfg.seed, state, cfg.out)
        if state == "reused":
            results[i] = run.read_json(run.summary)
        else:
            pending.append(i)
    in_process = execution.launcher == "none" and execution.jobs == 1
    # In this process the trainer shows its own per-epoch lines; an overall bar would interleave with them.
    # Drawn only on a terminal: in a redirected log a bar is a pile of carriage returns.
    bar = tqdm(total=len(configs), initial=len(configs) - len(pending), desc="runs",
               disable=not progress or in_process or not sys.stderr.isatty())
    start = time.perf_counter()
    try:
        if execution.launcher != "none":
            finished = _submitit(configs, pending, execution)
        elif in_process:
            finished = ((i, _in_process(configs[i], progress, i + 1, len(configs))) for i in pending)
        else:
            finished = _pool(configs, pending, execution.jobs)
        done = len(configs) - len(pending)
        for i, summary in finished:
            results[i] = summary
            done += 1
            bar.update(1)
            if progress:
                bar.write(_finished_line(done, len(configs), configs[i], summary, time.perf_counter() - start))
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _in_process(cfg: TrainConfig, progress: bool, index: int, total: int) -> dict[str, Any]:
    """One run in this process, announced just before it starts (the trainer prints its epochs)."""
    from dstbench.train.loop import train
    from dstbench.train.resume import started

    if progress:
        announce_run(index, total, cfg.method, cfg.sparsity, cfg.seed, "resuming" if started(cfg.out) else "training", cfg.out)
    return train(cfg, resume="auto", progress=progress)


def _pool(configs: Sequence[TrainConfig], pending: Sequence[int], jobs: int) -> Iterator[tuple[int, dict[str, Any]]]:
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, max(1, len(pending))), mp_context=get_context("spawn"), initializer=_worker_init
    )
    futures = {pool.submit(run_one, configs[i]): i for i in pending}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BaseException:
        # A failed run or an interrupt stops the grid: the queued runs never start, the running ones
        # are stopped (SIGTERM unwinds them, see _worker_init), and their results are not awaited.
        processes = list((pool._processes or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(ProcessLookupError, ValueError):
                process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submitit(
    configs: Sequence[TrainConfig], pending: Sequence[int], execution: Execution
) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher needs submitit (pip install submitit)") from None
    if not pending:
        return
    first = Path(configs[pending[0]].out).parent
    folder = Path(execution.submitit_dir or first / ".submitit")
    cluster = "local" if execution.launcher == "local" else "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name="dstbench", **execution.slurm.executor_parameters(cluster))
    jobs = executor.map_array(TrainJob(), [configs[i] for i in pending])
    index = {job.job_id: i for job, i in zip(jobs, pending)}
    for job in submitit.helpers.as_completed(jobs):
        try:
            summary = job.result()
        except Exception as exc:  # submitit wraps the job's failure; show its last line, once
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DstbenchError(f"job {job.job_id} ({configs[index[job.job_id]].out}) failed: {last}") from None
        yield index[job.job_id], summary

