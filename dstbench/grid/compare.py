"""``dstbench compare``: one run per (method, sparsity, seed) into one folder, then one table.

Finished runs are reused and interrupted ones resumed, so re-issuing the same command after a crash
only trains what is missing. A run is reused or resumed only when its resolved config, hyper-parameters
and code version match the request (the ``--resume`` check, :mod:`dstbench.runs.reuse`); otherwise the
command stops with one line naming the field, or, with ``--rerun-mismatched``, retrains that run. Hyper-parameters given as ``method.name=value`` apply to that method
only; plain ``name=value`` applies to every method (and must be valid for each).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.analysis.report import report_rows
from dstbench.analysis.tables import format_tables
from dstbench.runs.atomic import atomic_write_json, atomic_write_text
from dstbench.config import TrainConfig, implied_preset, resolve_config
from dstbench.core.errors import ConfigError
from dstbench.grid.execution import Execution
from dstbench.grid.launch import execute
from dstbench.core.registry import get_method
from dstbench.runs.reuse import reusable_summary
from dstbench.runs.rundir import check_output_dir
from dstbench.train.preflight import preflight
from dstbench.train.distributed import device_line

__all__ = ["run_grid", "run_name", "grid_configs", "check_grid", "finish_grid", "format_table", "method_hp"]


def run_name(method: str, sparsity: float, seed: int, hp_values: Mapping[str, Any] | None = None) -> str:
    """``rigl_s0.9_seed0``; a hyper-parameter grid point adds its values: ``bidst_s0.9_lam1e-6_seed0``."""
    tag = "".join(f"_{name}{str(value).replace('/', '-')}" for name, value in (hp_values or {}).items())
    return f"{method}_s{sparsity:g}{tag}_seed{seed}"


def method_hp(hp: Mapping[str, Any], method: str) -> dict[str, Any]:
    """Plain names for everyone, ``method.name`` only for that method."""
    chosen = {k: v for k, v in hp.items() if "." not in k}
    for key, value in hp.items():
        owner, _, name = key.partition(".")
        if name and owner == method:
            chosen[name] = value
    return chosen


def check_hp_owners(methods: Sequence[str], *assignments: Mapping[str, Any]) -> None:
    """Every ``method.name`` names a method of the grid and one of its fields, and every plain ``name``
    is a field of every method; otherwise one line with the nearest fix (a mistyped prefix would
    otherwise be silently ignored, and the method trained with its default)."""
    fields = {method: {f.name for f in dataclasses.fields(get_method(method))} for method in methods}
    for hp in assignments:
        for key in hp:
            owner, dot, name = key.partition(".")
            if dot and owner not in fields:
                close = difflib.get_close_matches(owner, list(fields), n=1)
                hint = f"; did you mean {close[0]}.{name}?" if close else ""
                raise ConfigError(f"--hp {key}: {owner!r} is not among --methods ({', '.join(methods)}){hint}")
            if not dot:
                lacking = [m for m in methods if key not in fields[m]]
                having = [m for m in methods if key in fields[m]]
                if lacking and having:
                    raise ConfigError(
                        f"--hp {key} applies to every method, and {lacking[0]} has no {key!r}; set it for the methods "
                        f"that have it: {', '.join(f'{m}.{key}' for m in having)}"
                    )


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
    hp_grid: Mapping[str, Sequence[Any]] | None = None,
) -> list[TrainConfig]:
    """Resolve every run's config up front and make every check its run makes before its first step
    (:func:`dstbench.train.preflight.preflight`: hyper-parameters, and what depends on the run's length),
    so a bad cell fails before hours of training, and before any run folder is made.

    ``hp_grid`` maps hyper-parameter names (plain, or ``method.name`` for one method) to the values to
    try; each method runs every combination of the entries that apply to it.
    """
    preset = implied_preset(preset, config_file, overrides)
    for method in methods:
        get_method(method)
    check_hp_owners(methods, hp, hp_grid or {})
    base = resolve_config(preset, config_file, overrides, {})
    if out is not None and not out.strip():
        raise ConfigError("--out is empty; give a folder for the runs")
    folder = Path(out or "runs/compare")
    configs = []
    for method in methods:
        grid = method_hp(hp_grid or {}, method)
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            for sparsity in sparsities or [base.sparsity]:
                for seed in seeds or [base.seed]:
                    fields = {**overrides, "method": method, "sparsity": sparsity, "seed": seed}
                    fields["out"] = str(folder / run_name(method, float(sparsity), seed, point))
                    cfg = resolve_config(preset, config_file, fields, {**method_hp(hp, method), **point})
                    preflight(cfg)
                    configs.append(cfg)
    return configs


def run_grid(
    methods: Sequence[str],
    *,
    progress: bool = True,
    execution: Execution | None = None,
    rerun_mismatched: bool = False,
    baseline: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train (or reuse, or resume) every run; write ``compare.json``/``compare.md``; return the summaries.

    A finished or interrupted run is reused only if it is the requested run (same config and code);
    ``execution`` says where the runs train (in this process, a process pool, SLURM; see ``launch``);
    ``baseline`` (default: the first method) is the method the tables test every other against.
    """
    if baseline is not None and baseline not in methods:
        raise ConfigError(f"--baseline {baseline!r} is not among --methods ({', '.join(methods)})")
    configs = grid_configs(methods, **options)
    check_grid(configs, rerun_mismatched)
    if progress and configs:  # once for the grid, not once per run
        placed = (execution.devices if execution is not None else ()) or (configs[0].device,)
        print(device_line(placed, configs[0].threads), flush=True)
    summaries = execute(configs, execution, progress=progress)
    return finish_grid(configs, summaries, Path(options.get("out") or "runs/compare"), baseline)


def check_grid(configs: Sequence[TrainConfig], rerun_mismatched: bool = False) -> None:
    """The grid's folders can hold runs, and every finished or started run there is the requested one
    (refused in one line, or cleared with ``rerun_mismatched``): after every cell's checks, before any run."""
    for folder in dict.fromkeys(Path(cfg.out).parent for cfg in configs):
        check_output_dir(folder)
    for cfg in configs:
        reusable_summary(cfg, rerun_mismatched)


def finish_grid(
    configs: Sequence[TrainConfig], summaries: list[dict[str, Any]], folder: Path, baseline: str | None = None
) -> list[dict[str, Any]]:
    """Tag every summary with its run folder and config; write ``compare.json``/``compare.md`` in ``folder``."""
    for cfg, summary in zip(configs, summaries):
        summary["run_dir"] = cfg.out
        summary["config"] = cfg.to_json()  # the report groups by every setting, not only the summary's
    rows = report_rows(summaries, baseline=baseline)
    atomic_write_json(folder / "compare.json", rows)
    atomic_write_text(folder / "compare.md", format_tables(rows))
    return summaries


def format_table(summaries: Sequence[Mapping[str, Any]], baseline: str | None = None) -> str:
    """The ``dstbench report`` tables: accuracy over seeds with CIs and Welch's test against ``baseline``,
    Table 1's layout, and training/inference FLOPs, updates and overheads."""
    return format_tables(report_rows(summaries, baseline=baseline))
