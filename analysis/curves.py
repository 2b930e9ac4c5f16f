"""Learning curves: test accuracy and training loss per epoch, mean ± std over seeds, one line per cell.

What a reader of a results table asks next: did the methods separate early or late, are they still
climbing (a comparison of unconverged networks), did one seed fall behind? The cells are the report's
(every setting but the seed, :func:`dstbench.analysis.report.report_rows`) and carry its labels, so a
figure and a table of one folder name the same lines and never merge two settings.

Seeds of one cell share their schedule, so each epoch has a point from every seed; the band is ±1 std
over seeds and each legend entry gives n. A line that would hide under an earlier one is dashed and
says so. :func:`curve_series` computes what is drawn, so tests read numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dstbench.core.errors import DstbenchError
from dstbench.runs.rundir import RunDir

from dstbench.analysis.plots import NothingToPlot, _band, _legend_outside, _n_label, _percent, save_figure
from dstbench.analysis.report import report_rows, run_summaries
from dstbench.analysis.runs import Run
from dstbench.analysis.styles import method_style

__all__ = ["METRICS", "Curve", "curve_series", "curves_figure", "plot_curves"]

METRICS: dict[str, tuple[str, float]] = {
    "test_acc": ("test accuracy (%)", 100.0),
    "train_loss": ("training loss", 1.0),
    "test_loss": ("test loss", 1.0),
    "train_acc": ("training accuracy (%)", 100.0),
}
"""The per-epoch records of ``metrics.jsonl`` that can be drawn: (axis label, scale)."""
DEFAULT_METRICS = ("test_acc", "train_loss")
# Two lines closer than this share of a panel's span of values everywhere are drawn on top of each other.
OVERLAP = 0.005


@dataclass(frozen=True)
class Curve:
    """One cell's values per epoch (scaled as drawn): mean and sample std over its n seeds."""

    label: str
    method: str
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n: int


def _per_epoch(run_dir: str, metric: str) -> dict[int, float]:
    """``{epoch: value}`` from a run's metrics; a resumed epoch's last record is the one that counts."""
    rows = RunDir(run_dir).read_jsonl(RunDir(run_dir).metrics)
    return {int(row["epoch"]): float(row[metric]) for row in rows if row.get(metric) is not None}


def _curve(row: Mapping[str, Any], label: str, metric: str) -> Curve:
    """A cell's curve over the epochs every one of its seeds recorded (all of them, for finished runs)."""
    scale = METRICS[metric][1]
    seeds = [_per_epoch(str(run_dir), metric) for run_dir in row["run_dirs"]]
    epochs = sorted(set.intersection(*(set(values) for values in seeds)))
    if not epochs:
        raise NothingToPlot(f"nothing to plot: {label} has no epoch with {metric} in every seed's metrics.jsonl")
    columns = [[scale * values[epoch] for values in seeds] for epoch in epochs]
    return Curve(
        label,
        str(row["method"]),
        tuple(epochs),
        tuple(statistics.fmean(column) for column in columns),
        tuple(statistics.stdev(column) if len(column) > 1 else 0.0 for column in columns),
        len(seeds),
    )


def curve_series(runs: Sequence[Run], metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, list[Curve]]:
    """Per metric, one :class:`Curve` per report cell of the finished ``runs``, in the report's order;
    the sparsity joins the label where the cells have several."""
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown:
        raise DstbenchError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    rows = report_rows(run_summaries([run for run in runs if run.summary is not None]))
    if not rows:
        raise NothingToPlot("nothing to plot: no finished runs")
    several = len({row["sparsity"] for row in rows}) > 1
    labels = [f"{row['label']} {_percent(row['sparsity'])}" if several else str(row["label"]) for row in rows]
    return {metric: [_curve(row, label, metric) for row, label in zip(rows, labels)] for metric in metrics}


def _coinciding(curves: Sequence[Curve]) -> list[str]:
    """Per curve, the label of the first earlier one it would hide under ("" if none): every point within
    :data:`OVERLAP` of the panel's span of values (a loss axis zooms in, so a fixed tolerance would not do)."""
    values = [v for curve in curves for v in curve.mean]
    tolerance = OVERLAP * (max(values) - min(values)) if values else 0.0
    twins = []
    for i, curve in enumerate(curves):
        twins.append(next((earlier.label for earlier in curves[:i] if earlier.epochs == curve.epochs
                           and all(abs(a - b) <= tolerance for a, b in zip(earlier.mean, curve.mean))), ""))  # fmt: skip
    return twins


def curves_figure(runs: Sequence[Run], metrics: Sequence[str] = DEFAULT_METRICS) -> Figure:
    """One panel per metric (default: test accuracy and training loss) against the epoch, stacked, each
    with its own legend: which lines coincide differs from panel to panel."""
    series = curve_series(runs, metrics)
    figure = Figure(figsize=(9.0, 3.4 * len(metrics)), layout="constrained")
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for axis, metric in zip(axes, metrics):
        for curve, twin in zip(series[metric], _coinciding(series[metric])):
            style = method_style(curve.method)
            dashed = {"linestyle": "--", "markerfacecolor": "none"} if twin else {}
            label = _n_label(curve.label, curve.n) + (f" (coincides with {twin})" if twin else "")
            _band(axis, curve.epochs, curve.mean, curve.std, style.color)
            axis.plot(curve.epochs, curve.mean, label=label, color=style.color, marker=style.marker, markersize=4, **dashed)
        axis.set_xlabel("epoch")
        axis.set_ylabel(METRICS[metric][0])
        axis.set_title(f"{METRICS[metric][0][0].upper()}{METRICS[metric][0][1:]} per epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        _legend_outside(axis, title="cell (band: ±1 std over seeds)", fontsize="x-small")
    return figure


def plot_curves(runs: Sequence[Run], out: str | Path, metrics: Sequence[str] = DEFAULT_METRICS) -> list[Path]:
    """Write :func:`curves_figure` as PNG and PDF."""
    return save_figure(curves_figure(runs, metrics), out)
