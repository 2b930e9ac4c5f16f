"""Figure 3, 4 and 5 analogues, each written as PNG and PDF side by side.

* :func:`plot_iou`: mask IoU against training progress, one line per run (Figure 4);
* :func:`plot_sparsity_curve`: accuracy against sparsity on a log(1 - s) axis, and the realised
  sparsity against the nominal one (Figure 3, spec §10);
* :func:`plot_overhead`: wall time in mask updates against total training time (Figure 5).

Matplotlib's object API on its Agg canvas: no pyplot, so no global figure state and no display is
needed. Axes are labelled, every method has a legend entry, and figures are saved with
``bbox_inches="tight"`` so nothing is clipped.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from dstbench.atomic import atomic_write_bytes
from dstbench.errors import ConfigError

from .runs import Run
from .topology import MaskChange, interval_iou_series, interval_steps, update_iou_series

__all__ = ["figure_paths", "save_figure", "plot_iou", "plot_sparsity_curve", "plot_overhead"]

_FORMATS = (".png", ".pdf")


def figure_paths(out: str | Path) -> list[Path]:
    """``x.png`` or ``x.pdf`` -> both paths: every figure is written in both formats."""
    path = Path(out)
    if path.suffix.lower() not in _FORMATS:
        raise ConfigError(f"--out must end in .png or .pdf (both are written), got {str(out)!r}")
    return [path.with_suffix(suffix) for suffix in _FORMATS]


def save_figure(figure: Figure, out: str | Path) -> list[Path]:
    """Write ``figure`` as PNG and PDF (atomically) and return the two paths."""
    paths = figure_paths(out)
    for path in paths:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=path.suffix[1:], bbox_inches="tight", dpi=150)
        atomic_write_bytes(path, buffer.getvalue())
    return paths


def _percent(sparsity: float) -> str:
    return f"{100 * sparsity:.6g}%"


def _run_labels(runs: Sequence[Run]) -> list[str]:
    """The method, plus the sparsity when runs differ in it, plus the seed when that is still ambiguous."""
    several_sparsities = len({run.sparsity for run in runs}) > 1
    counts = Counter((run.method, run.sparsity) for run in runs)
    labels = []
    for run in runs:
        label = run.method + (f" {_percent(run.sparsity)}" if several_sparsities else "")
        labels.append(label + (f" seed {run.seed}" if counts[(run.method, run.sparsity)] > 1 else ""))
    return labels


def _log_sparsity_axis(axis: Axes, sparsities: Sequence[float], *, y: bool = False) -> None:
    """A log(1 - s) axis, inverted so sparsity grows rightwards (upwards), ticks labelled as sparsity %."""
    ticks = sorted({1.0 - s for s in sparsities})
    scale = axis.yaxis if y else axis.xaxis
    (axis.set_yscale if y else axis.set_xscale)("log")
    scale.set_major_locator(FixedLocator(ticks))
    scale.set_minor_locator(NullLocator())
    scale.set_major_formatter(FuncFormatter(lambda tick, _: _percent(1.0 - tick)))
    (axis.set_ylim if y else axis.set_xlim)(max(ticks) * 1.5, min(ticks) / 1.5)
    if not y:
        for label in axis.get_xticklabels():
            label.set(rotation=40, horizontalalignment="right")


def plot_iou(
    runs: Sequence[Run], out: str | Path, *, interval_epochs: float | None = None, interval: int | None = None
) -> list[Path]:
    """Figure 4: global mask IoU against training progress, one line per run.

    With an interval (epochs or steps) every run is sampled at that same fixed Δ (spec §9); without,
    each point is one topology update against the masks it replaced.
    """
    fixed = interval_epochs is not None or interval is not None
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.add_subplot()
    for run, label in zip(runs, _run_labels(runs)):
        series: list[MaskChange]
        if fixed:
            series = interval_iou_series(run, interval_steps(run, epochs=interval_epochs, steps=interval))
        else:
            series = update_iou_series(run)
        label += "" if series else " (no topology change)"
        axis.plot([100 * p.progress for p in series], [p.iou for p in series], marker="o", markersize=3, label=label)
    if interval_epochs is not None:
        what = f"every {interval_epochs:g} epoch(s)"
    elif interval is not None:
        what = f"every {interval} step(s)"
    else:
        what = "at each topology update"
    axis.set_xlabel("training progress (% of steps)")
    axis.set_ylabel("mask IoU with the previous mask")
    axis.set_title(f"Mask IoU {what} (sparsified layers, global)")
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(title="method", fontsize="small")
    return save_figure(figure, out)


def _by_sparsity(points: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    """Sorted sparsities with the mean and the std over seeds of ``key`` at each."""
    values: dict[float, list[float]] = {}
    for point in points:
        values.setdefault(float(point["sparsity"]), []).append(float(point[key]))
    sparsities = sorted(values)
    means = [statistics.fmean(values[s]) for s in sparsities]
    stds = [statistics.stdev(values[s]) if len(values[s]) > 1 else 0.0 for s in sparsities]
    return sparsities, means, stds


_REALISED = (("realised_sparsity_all", "-", "all weights"), ("realised_sparsity_sparsified", ":", "sparsified layers"))


def plot_sparsity_curve(points: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Figure 3: test accuracy against sparsity (error bars: std over seeds, when there are several),
    and beside it the realised sparsity against the nominal one, which the one-weight-per-layer floor
    caps at extreme sparsity (spec §10)."""
    methods = list(dict.fromkeys(point["method"] for point in points))
    nominal = sorted({float(point["sparsity"]) for point in points})
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    accuracy, realised = figure.subplots(1, 2)
    several_seeds = len({point["seed"] for point in points}) > 1
    for index, method in enumerate(methods):
        color = f"C{index}"
        mine = [point for point in points if point["method"] == method]
        sparsities, means, stds = _by_sparsity(mine, "test_acc")
        x = [1.0 - s for s in sparsities]
        errors = [100 * s for s in stds] if several_seeds else None
        accuracy.errorbar(x, [100 * m for m in means], yerr=errors, marker="o", capsize=3, color=color, label=method)
        for key, style, where in _REALISED:
            _, real, _ = _by_sparsity(mine, key)
            realised.plot(x, [1.0 - r for r in real], style, marker="o", color=color, label=f"{method}, {where}")
    ideal = [1.0 - s for s in nominal]
    realised.plot(ideal, ideal, "--", color="grey", label="realised = nominal")
    _log_sparsity_axis(accuracy, nominal)
    accuracy.set_xlabel("nominal sparsity (log scale of 1 - s)")
    accuracy.set_ylabel("test accuracy (%), mean ± std over seeds" if several_seeds else "test accuracy (%)")
    accuracy.set_title("Accuracy at extreme sparsity")
    accuracy.grid(alpha=0.3)
    accuracy.legend(title="method", fontsize="small")
    _log_sparsity_axis(realised, nominal)
    _log_sparsity_axis(realised, nominal, y=True)
    realised.set_xlabel("nominal sparsity (log scale of 1 - s)")
    realised.set_ylabel("realised sparsity (log scale of 1 - s)")
    realised.set_title("Realised vs nominal (>= 1 weight per layer)")
    realised.grid(alpha=0.3)
    realised.legend(fontsize="x-small")
    return save_figure(figure, out)


def plot_overhead(summaries: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Figure 5: seconds spent in mask updates against total training seconds, one colour per method,
    with lines of constant share (0.1 %, 1 %, 10 % of training time) for reference."""
    x_max = 1.05 * max(float(s["train_seconds"]) for s in summaries)
    y_max = 1.15 * max(max(float(s["update_seconds"]) for s in summaries), 1e-6)
    figure = Figure(figsize=(7.6, 4.2), layout="constrained")
    axis = figure.add_subplot()
    for index, method in enumerate(dict.fromkeys(s["method"] for s in summaries)):
        mine = [s for s in summaries if s["method"] == method]
        axis.scatter(
            [s["train_seconds"] for s in mine],
            [s["update_seconds"] for s in mine],
            color=f"C{index}",
            label=method,
            clip_on=False,  # runs without updates sit on the x axis
        )
    for share, style in ((0.001, ":"), (0.01, "--"), (0.1, "-.")):
        label = f"{100 * share:g}% of training"
        axis.plot([0, x_max], [0, share * x_max], style, color="grey", linewidth=0.8, label=label)
    axis.set_xlim(0, x_max)
    axis.set_ylim(0, y_max)
    axis.set_xlabel("training wall time (s)")
    axis.set_ylabel("wall time in mask updates (s)")
    axis.set_title("Mask-update overhead")
    axis.grid(alpha=0.3)
    axis.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save_figure(figure, out)
