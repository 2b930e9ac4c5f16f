"""``summary.json``: one run's results, its method's report and its cost, written when it finishes."""

from __future__ import annotations

import dataclasses
from typing import Any

from dstbench.engine.cost import run_flops
from dstbench.runs.integrity import code_version
from dstbench.runs.tickets import pipeline_flops
from dstbench.train.narrow import full_width_flops
from dstbench.train.checkpoint import History
from dstbench.train.distributed import describe_device
from dstbench.train.setup import Training
from dstbench.train.wall_time import device_name, wall_time

__all__ = ["finish"]


def finish(t: Training, history: History, stepper_report: dict[str, Any] | None) -> dict[str, Any]:
    """Check the sparse invariants one last time, then write and return the summary."""
    problems = t.engine.violations(final=True)
    if problems:
        raise RuntimeError("sparse invariants broken at the end of training: " + "; ".join(problems))
    summary = _results(t, history)
    last = history.metrics[-1] if history.metrics else {}
    summary.update({key: last[key] for key in ("ema_test_acc", "ema_test_loss") if key in last})  # --ema
    if stepper_report is not None:
        summary["compile"] = stepper_report
        if stepper_report.get("fast_steps") and t.engine.updater.needs.per_step_hook and not stepper_report.get("eager_hooks"):
            # The hook ran inside compiled or captured steps, where it cannot be timed apart: its share
            # is unknown (not 0); the epoch time holds its whole cost.
            summary["step_hook_share"] = summary["wall_time"]["step_hook_share"] = None
    summary.update(t.platform.summary())
    summary["code_version"] = code_version()
    t.run.write_summary(summary)
    return summary


def _results(t: Training, history: History) -> dict[str, Any]:
    cfg, engine, metrics, seconds = t.cfg, t.engine, history.metrics, history.train_seconds
    last = metrics[-1] if metrics else {}
    records = engine.records
    own_flops = run_flops(engine, t.data.input_size, t.data.num_train_samples)
    if engine.updater.narrows_model:  # small-dense: "× dense" against the full-width --model
        own_flops = full_width_flops(own_flops, cfg.model, t.data.num_classes, t.data.input_size)
    return {
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "sparsity": cfg.sparsity,
        "distribution": cfg.distribution,
        "dense_layers": cfg.dense_layers,
        "seed": cfg.seed,
        "device": describe_device(t.device, cfg.threads),
        "model_kwargs": dict(cfg.model_kwargs),
        "epochs": cfg.epochs,
        "steps_per_epoch": t.steps_per_epoch,
        "test_acc": last.get("test_acc"),
        "best_test_acc": max((m["test_acc"] for m in metrics), default=None),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "topology_updates": len(records),
        "final_iou": records[-1].iou if records else None,
        "itop_rate": engine.itop_rate(),
        "realised_sparsity": engine.realised_sparsity(),
        "train_seconds": seconds,
        "update_seconds": engine.update_seconds,
        "update_time_fraction": engine.update_seconds / seconds if seconds else 0.0,
        "step_hook_seconds": engine.step_hook_seconds,
        # Share of training time inside the per-step hooks only (not the method's whole cost: see wall_time).
        "step_hook_share": engine.step_hook_seconds / seconds if seconds else 0.0,
        "wall_time": wall_time(metrics, device_name(t.device, cfg.threads)),
        "hyperparameters": engine.updater.hyperparameters(),
        "needs": dataclasses.asdict(engine.updater.needs),
        "method_report": engine.updater.report(),
        # This run's own, from its masks and updates; a lottery ticket adds its ticket's training.
        "flops": pipeline_flops(cfg.hp, own_flops),
        "step_time": _step_time(t, seconds, own_flops),
    }


def _step_time(t: Training, seconds: float, flops: dict[str, Any]) -> dict[str, Any]:
    """Measured wall time per optimizer step (data loading included, evaluation not) beside the FLOPs
    counted for one, under the run's execution backend, with its re-compressions of mask formats."""
    steps = t.total_steps
    report = t.kernels.report() if t.kernels is not None else {}
    return {
        "backend": t.cfg.backend,
        "seconds_per_step": seconds / steps if steps else None,
        "train_flops_per_step": float(flops["train_flops"]) / steps if steps else None,
        **report,
    }
