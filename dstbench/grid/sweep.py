"""Sweeps: every method at every sparsity up to 99.9999 % (BiDST Figure 3), and hyper-parameter grids
(``--hp-grid lam=1e-6,1e-4``, Figure C.1).

Each point is an ordinary run in the sweep folder, trained through ``compare``'s grid, so finished
points are reused and interrupted ones resumed (only if their config and code version match; otherwise
one error line, or retrained with ``--rerun-mismatched``): re-issuing a sweep trains only what is missing. At
extreme sparsity the one-weight-per-layer floor (k = n - floor(s·n)) keeps the realised sparsity below
the nominal one, so every point records both, over the sparsified layers and over all conv/FC weights.
``sweep.json`` (read by ``dstbench plot sparsity-curve`` and ``plot ablation``) and ``sweep.csv`` hold
one line per point; ``sweep.md`` holds the report tables (``sweep`` prints them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.runs.atomic import atomic_write_json, atomic_write_text
from dstbench.core.errors import ConfigError, DstbenchError

__all__ = ["DEFAULT_SPARSITIES", "SWEEP_FILE", "TABLE_FILE", "sweep_point", "run_sweep", "write_sweep", "load_sweep", "parse_hp_grid"]

DEFAULT_SPARSITIES: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 0.99999, 0.999999)
SWEEP_FILE = "sweep.json"
TABLE_FILE = "sweep.md"


def parse_hp_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["bidst.lam=1e-6,1e-4", "beta=1"]`` -> ``{"bidst.lam": ["1e-6", "1e-4"], "beta": ["1"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not name.strip() or not values:
            raise ConfigError(f"--hp-grid expects NAME=v1,v2,..., got {item!r}")
        if name.strip() in grid:
            raise ConfigError(f"--hp-grid {name.strip()} is given twice")
        grid[name.strip()] = values
    return grid


def sweep_point(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One run's line: nominal and realised sparsities, accuracy, cost and topology numbers."""
    realised = summary["realised_sparsity"]
    flops = summary.get("flops") or {}
    selection = summary.get("method_report") or {}
    return {
        "method": summary["method"],
        "seed": summary["seed"],
        "sparsity": summary["sparsity"],
        "realised_sparsity_sparsified": realised["sparsified"],
        "realised_sparsity_all": realised["all"],
        # Global selections (--distribution global) say which layers the collapse guard clamped.
        "clamped_layers": len(selection.get("clamped_layers") or {}),
        "collapsed_layers": len(selection.get("collapsed_layers") or []),
        "test_acc": summary["test_acc"],
        "best_test_acc": summary["best_test_acc"],
        "topology_updates": summary["topology_updates"],
        "itop_rate": summary["itop_rate"],
        "train_flops": flops.get("train_flops"),
        "inference_flops": flops.get("inference_flops"),
        "update_time_fraction": summary["update_time_fraction"],
        "hyperparameters": summary.get("hyperparameters", {}),
        "run_dir": summary.get("run_dir"),
    }


def _csv(points: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(points[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**p, "hyperparameters": json.dumps(p.get("hyperparameters", {}), sort_keys=True)} for p in points)
    return buffer.getvalue()


def run_sweep(
    methods: Sequence[str],
    *,
    out: str,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    progress: bool = True,
    **grid_options: Any,
) -> list[dict[str, Any]]:
    """Train (or reuse) every (method, sparsity, seed) run in ``out``; write and return the points.

    ``grid_options`` are :func:`dstbench.grid.compare.grid_configs`' (seeds, preset, config_file,
    overrides, hp, hp_grid) and ``run_grid``'s (baseline); like ``compare``, no preset and no
    model/data options means the quick preset.
    """
    from dstbench.grid.compare import run_grid  # imports torch: only when a sweep runs

    summaries = run_grid(methods, sparsities=sparsities, out=out, progress=progress, **grid_options)
    return write_sweep(
        Path(out), methods, sparsities, summaries, hp_grid=grid_options.get("hp_grid"), baseline=grid_options.get("baseline")
    )


def write_sweep(
    folder: Path,
    methods: Sequence[str],
    sparsities: Sequence[float],
    summaries: Sequence[Mapping[str, Any]],
    *,
    hp_grid: Mapping[str, Sequence[Any]] | None = None,
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """Write ``sweep.json``, ``sweep.csv`` and ``sweep.md`` for the runs of ``summaries``; return the points."""
    from dstbench.analysis.report import report_rows
    from dstbench.analysis.tables import format_tables

    points = [sweep_point(summary) for summary in summaries]
    atomic_write_json(
        folder / SWEEP_FILE,
        {"methods": list(methods), "sparsities": list(sparsities), "hp_grid": dict(hp_grid or {}), "points": points},
    )
    atomic_write_text(folder / "sweep.csv", _csv(points))
    rows = report_rows(summaries, baseline=baseline)
    atomic_write_text(folder / TABLE_FILE, format_tables(rows, title=f"Sweep: {folder}"))
    return points


def load_sweep(folder: str | Path) -> list[dict[str, Any]]:
    """The points of a sweep folder, or a one-line error if ``folder`` is not one."""
    path = Path(folder) / SWEEP_FILE
    if not path.exists():
        raise DstbenchError(f"{folder} is not a sweep folder (no {SWEEP_FILE}; write one with `dstbench sweep --out`)")
    from dstbench.runs.rundir import RunDir

    points: list[dict[str, Any]] = RunDir(folder).read_json(path)["points"]
    return points
