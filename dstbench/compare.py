"""``dstbench compare``: one run per (method, sparsity, seed) into one folder, then one table.

Finished runs are reused and interrupted ones resumed, so re-issuing the same command after a crash
only trains what is missing. A run is reused or resumed only when its resolved config, hyper-parameters
and code version match the request (the ``--resume`` check, :mod:`dstbench.reuse`); otherwise the
command stops with one line naming the field, or, with ``--rerun-mismatched``, retrains that run. Hyper-parameters given as ``method.name=value`` apply to that method
only; plain ``name=value`` applies to every method (and must be valid for each).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .analysis.report import markdown_table, report_rows
from .atomic import atomic_write_json, atomic_write_text
from .config import TrainConfig, resolve_config
from .distributions import validate_sparsity
from .errors import ConfigError
from .execution import Execution
from .launch import execute
from .registry import create_updater, get_method
from .reuse import Mismatch, check_same_run
from .rundir import RunDir, check_output_dir

__all__ = ["run_grid", "run_name", "grid_configs", "format_table", "summarise"]

log = logging.getLogger(__name__)
_NO_PRESET_KEYS = {"model", "dataset", "data_dir"}


def run_name(method: str, sparsity: float, seed: int) -> str:
    return f"{method}_s{sparsity:g}_seed{seed}"


def _method_hp(hp: Mapping[str, Any], method: str) -> dict[str, Any]:
    """Plain names for everyone, ``method.name`` only for that method."""
    chosen = {k: v for k, v in hp.items() if "." not in k}
    for key, value in hp.items():
        owner, _, name = key.partition(".")
        if name and owner == method:
            chosen[name] = value
    return chosen


def grid_configs(
    methods: Sequence[str],
    *,
    sparsities: Sequence[float] | None,
    seeds: Sequence[int] | None,
    out: str | None,
    preset: str | None,
    config_file: str | None,
    overrides: Mapping[str, Any],
    hp: Mapping[str, Any],
) -> list[TrainConfig]:
    """Resolve every run's config up front, so a typo fails before hours of training."""
    if preset is None and config_file is None and not _NO_PRESET_KEYS & set(overrides):
        preset = "quick"
    for method in methods:
        get_method(method)
    base = resolve_config(preset, config_file, overrides, {})
    if out is not None and not out.strip():
        raise ConfigError("--out is empty; give a folder for the runs")
    folder = Path(out or "runs/compare")
    configs = []
    for method in methods:
        for sparsity in sparsities or [base.sparsity]:
            for seed in seeds or [base.seed]:
                fields = {**overrides, "method": method, "sparsity": validate_sparsity(sparsity), "seed": seed}
                fields["out"] = str(folder / run_name(method, fields["sparsity"], seed))
                cfg = resolve_config(preset, config_file, fields, _method_hp(hp, method))
                create_updater(cfg.method, cfg.hp)  # a bad hyper-parameter fails here, before any run
                configs.append(cfg)
    return configs


def _reusable_summary(cfg: TrainConfig, rerun_mismatched: bool) -> dict[str, Any] | None:
    """The summary of the finished run in ``cfg.out`` if it is the requested run; None to (re)train.

    A different config or code version is one error line, or, with ``rerun_mismatched``, the old run
    is deleted so that it is trained again from scratch.
    """
    run = RunDir(cfg.out)
    if not run.path.exists():
        return None
    try:
        if run.is_complete():
            summary: dict[str, Any] = run.read_json(run.summary)
            check_same_run(run.path, run.read_json(run.config), summary.get("code_version"), cfg, resume=False)
            return summary
        if run.checkpoint.exists():
            state = run.load_checkpoint("cpu")
            saved = state.get("config") or run.read_json(run.config)
            check_same_run(run.path, saved, state.get("code_version"), cfg, resume=False)
        return None
    except Mismatch:
        if not rerun_mismatched:
            raise
        log.warning("%s was made with other settings: retraining it (--rerun-mismatched)", run.path)
        shutil.rmtree(run.path)
        return None


def run_grid(
    methods: Sequence[str],
    *,
    progress: bool = True,
    execution: Execution | None = None,
    rerun_mismatched: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train (or reuse, or resume) every run; write ``compare.json``/``compare.md``; return the summaries.

    A finished or interrupted run is reused only if it is the requested run (same config and code);
    ``execution`` says where the runs train (in this process, a process pool, SLURM; see ``launch``).
    """
    configs = grid_configs(methods, **options)
    if configs:
        check_output_dir(Path(configs[0].out).parent)
    for cfg in configs:
        _reusable_summary(cfg, rerun_mismatched)  # a run made with other settings: refused, or cleared
    summaries = execute(configs, execution, progress=progress)
    for cfg, summary in zip(configs, summaries):
        summary["run_dir"] = cfg.out
    folder = Path(options.get("out") or "runs/compare")
    table = format_table(summaries)
    atomic_write_json(folder / "compare.json", summarise(summaries))
    atomic_write_text(folder / "compare.md", table + "\n")
    return summaries


def summarise(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (method, sparsity, ...): means and stds over seeds (see ``dstbench report``)."""
    return report_rows(summaries)


def format_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The ``dstbench report`` table: accuracy over seeds, training/inference FLOPs, updates, overhead."""
    return markdown_table(report_rows(summaries))
