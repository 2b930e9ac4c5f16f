"""Figure 3, 4 and 5 analogues, each written as PNG and PDF side by side.

* :func:`iou_figure`: mask IoU between masks a fixed interval apart against training progress (Figure 4);
* :func:`sparsity_curve_figure`: accuracy against sparsity on a log(1 - s) axis, with chance accuracy
  marked, and the realised sparsity against the nominal one (Figure 3);
* Figure 5 (what a method's own work costs) is :mod:`.overhead`'s, with the helpers defined here.

Each ``*_figure`` returns the :class:`~matplotlib.figure.Figure` (so tests can read its artists) and
the matching ``plot_*`` saves it. The rules every figure keeps:

* a method has one colour and one marker everywhere (:mod:`.styles`); its sparsities differ by line
  style, listed in numeric order;
* several seeds are drawn as their mean with a ±1 std band, not as separate lines;
* legends sit outside the axes, so they never cover data;
* a line that coincides with an earlier one is drawn dashed with hollow markers and its legend entry
  says "(coincides with ...)", so no line silently hides another;
* a figure with nothing to draw raises :class:`NothingToPlot` (one line, exit code 2) instead of
  writing empty axes.

Matplotlib's object API on its Agg canvas: no pyplot, so no global figure state and no display.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from dstbench.runs.atomic import atomic_write_bytes
from dstbench.core.errors import ConfigError, DstbenchError

from dstbench.analysis.runs import Run
from dstbench.analysis.styles import method_order, method_style, sparsity_linestyle
from dstbench.analysis.topology import MaskChange, interval_iou_series, interval_steps, update_iou_series

__all__ = [
    "NothingToPlot",
    "figure_paths",
    "save_figure",
    "FIGURE4_INTERVAL_EPOCHS",
    "iou_figure",
    "plot_iou",
    "sparsity_curve_figure",
    "plot_sparsity_curve",
    "chance_accuracy",
]

_FORMATS = (".png", ".pdf")


class NothingToPlot(DstbenchError):
    """The inputs hold no data for this figure (e.g. the IoU between updates of a run that never updated)."""


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


def _log_sparsity_axis(axis: Axes, sparsities: Sequence[float], *, y: bool = False) -> None:
    """A log(1 - s) axis, inverted so sparsity grows rightwards (upwards), ticks labelled as sparsity %."""
    ticks = sorted({1.0 - s for s in sparsities})
    scale = axis.yaxis if y else axis.xaxis
    # Limits before the log scale: a single sparsity would otherwise give log scaling a zero-width range.
    (axis.set_ylim if y else axis.set_xlim)(max(ticks) * 1.5, min(ticks) / 1.5)
    (axis.set_yscale if y else axis.set_xscale)("log")
    scale.set_major_locator(FixedLocator(ticks))
    scale.set_minor_locator(NullLocator())
    scale.set_major_formatter(FuncFormatter(lambda tick, _: _percent(1.0 - tick)))
    if not y:
        for label in axis.get_xticklabels():  # 90 %, 95 %, 98 %, 99 % share one decade of 1 - s
            label.set(rotation=60, horizontalalignment="right", fontsize="small")


def _legend_outside(axis: Axes, *, fontsize: str = "small", **options: Any) -> Legend:
    """A legend to the right of ``axis``, outside it, so it can never cover a line or a point."""
    return axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize, **options)


@dataclass
class _Lines:
    """The lines drawn on one axis so far, to notice when a new one coincides with an earlier one."""

    drawn: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)

    # Relative difference below which two lines are drawn on top of each other at any usual figure size.
    RTOL = 5e-4

    def coincides(self, xs: np.ndarray, ys: np.ndarray) -> str | None:
        """The label of the first drawn line that ``(xs, ys)`` would cover, if any."""
        for name, px, py in self.drawn:
            if px.shape == xs.shape and np.allclose(px, xs, rtol=self.RTOL, atol=1e-12):
                if np.allclose(py, ys, rtol=self.RTOL, atol=1e-12):
                    return name
        return None

    def plot(self, axis: Axes, x: Sequence[float], y: Sequence[float], label: str, **style: Any) -> str:
        """Draw a line; if it coincides with one already drawn, dash it, hollow its markers and say so
        in its label. Returns the label used."""
        xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        twin = self.coincides(xs, ys)
        if twin is not None:
            label = f"{label} (coincides with {twin})"
            style = {**style, "linestyle": "--", "markerfacecolor": "none"}
        axis.plot(xs, ys, label=label, **style)
        self.drawn.append((label.split(" (coincides with ")[0], xs, ys))
        return label


def _seed_label(base: str, n_seeds: Sequence[int]) -> str:
    low, high = min(n_seeds), max(n_seeds)
    if high <= 1:
        return base
    return f"{base} (mean ± std, n={low})" if low == high else f"{base} (mean ± std, n={low}-{high})"


def _band(axis: Axes, x: Sequence[float], mean: Sequence[float], std: Sequence[float], color: str) -> None:
    """The ±1 std band around a mean line (drawn only where there are several seeds); a single point
    has no width for a band, so it gets an error bar instead."""
    if any(s > 0 for s in std) and len(x) == 1:
        axis.errorbar(x, mean, yerr=std, color=color, capsize=4, linestyle="none", alpha=0.6)
    elif any(s > 0 for s in std):
        low = [m - s for m, s in zip(mean, std)]
        high = [m + s for m, s in zip(mean, std)]
        axis.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)


# -- Figure 4: IoU ---------------------------------------------------------------------------------
FIGURE4_INTERVAL_EPOCHS = 1.0
"""Figure 4's default Δ: the masks one epoch apart, for every run alike. IoU per update is not
comparable across cadences (RigL's updates every 100 steps each change little, BiDST's every 8 epochs
change much), the same Δ for every method is (docs/analysis.md)."""


def _iou_series(run: Run, interval_epochs: float | None, interval: int | None, per_update: bool) -> list[MaskChange]:
    if per_update:
        if interval_epochs is not None or interval is not None:
            raise ConfigError("the IoU per update has no interval: give per_update or an interval, not both")
        return update_iou_series(run)
    if interval_epochs is None and interval is None:
        interval_epochs = FIGURE4_INTERVAL_EPOCHS
    return interval_iou_series(run, interval_steps(run, epochs=interval_epochs, steps=interval))


def _mean_series(series: Sequence[Sequence[MaskChange]]) -> tuple[list[float], list[float], list[float]]:
    """Progress (%), mean IoU and std over seeds. Seeds of one setting share their schedule, so their
    points fall on the same steps; if they do not, each seed is interpolated onto the union of steps."""
    grids = [[100 * p.progress for p in s] for s in series]
    values = [[p.iou for p in s] for s in series]
    xs = sorted({x for grid in grids for x in grid})
    if any(grid != xs for grid in grids):
        values = [list(np.interp(xs, grid, vals)) for grid, vals in zip(grids, values)]
    columns = list(zip(*values))
    means = [statistics.fmean(c) for c in columns]
    stds = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
    return xs, means, stds


def _n_label(base: str, n: int) -> str:
    """A legend entry that always gives the number of seeds, one included."""
    return _seed_label(base, [n]) if n > 1 else f"{base} (n={n})"


def _iou_title(interval_epochs: float | None, interval: int | None, per_update: bool) -> str:
    if per_update:
        return "Mask IoU at each topology update (not comparable across cadences)"
    what = f"{interval} step(s)" if interval is not None else f"{interval_epochs or FIGURE4_INTERVAL_EPOCHS:g} epoch(s)"
    return f"Mask IoU between masks {what} apart (sparsified layers, global)"


def iou_figure(
    runs: Sequence[Run], *, interval_epochs: float | None = None, interval: int | None = None, per_update: bool = False
) -> Figure:
    """Figure 4: global mask IoU against training progress, one line per (method, sparsity), seeds
    averaged with a ±1 std band; each legend entry gives its number of seeds.

    Every run is sampled at the same fixed Δ (``interval`` steps, ``interval_epochs``, or
    :data:`FIGURE4_INTERVAL_EPOCHS`), as the paper's figure is. ``per_update`` plots each topology
    update against the masks it replaced instead (a diagnostic: not comparable across cadences); runs
    that never updated have nothing to show then, and if no run updated, :class:`NothingToPlot`.
    """
    groups: dict[tuple[str, float], list[list[MaskChange]]] = {}
    for run in runs:
        groups.setdefault((run.method, run.sparsity), []).append(_iou_series(run, interval_epochs, interval, per_update))
    if not any(series for group in groups.values() for series in group):
        names = ", ".join(str(run.path) for run in runs)
        raise NothingToPlot(
            f"nothing to plot: no run changed its mask ({names}); the IoU between updates needs a method that "
            "updates its mask (leave out --per-update to sample at fixed times)"
        )
    sparsities = sorted({s for _, s in groups})
    figure = Figure(figsize=(7.6, 4.2), layout="constrained")
    axis = figure.add_subplot()
    lines = _Lines()
    for method in method_order(m for m, _ in groups):
        style = method_style(method)
        for sparsity in sparsities:
            group = groups.get((method, sparsity))
            if group is None:
                continue
            base = method + (f" {_percent(sparsity)}" if len(sparsities) > 1 else "")
            changed = [series for series in group if series]
            if not changed:  # a legend entry that says why the line is missing
                axis.plot([], [], color=style.color, marker=style.marker, linestyle="none",
                          label=f"{base} (no topology change, n={len(group)})")  # fmt: skip
                continue
            x, mean, std = _mean_series(changed)
            _band(axis, x, mean, std, style.color)
            lines.plot(axis, x, mean, _n_label(base, len(changed)), color=style.color, marker=style.marker,
                       markersize=4, linestyle=sparsity_linestyle(sparsity, sparsities))  # fmt: skip
    axis.set_xlabel("training progress (% of steps)")
    axis.set_ylabel("mask IoU with the previous mask")
    axis.set_title(_iou_title(interval_epochs, interval, per_update))
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    _legend_outside(axis, title="method")
    return figure


def plot_iou(
    runs: Sequence[Run],
    out: str | Path,
    *,
    interval_epochs: float | None = None,
    interval: int | None = None,
    per_update: bool = False,
) -> list[Path]:
    """Write :func:`iou_figure` as PNG and PDF."""
    figure = iou_figure(runs, interval_epochs=interval_epochs, interval=interval, per_update=per_update)
    return save_figure(figure, out)


# -- Figure 3: sparsity curve ----------------------------------------------------------------------
def _by_sparsity(
    points: Sequence[Mapping[str, Any]], key: str
) -> tuple[list[float], list[float], list[float], list[int]]:
    """Sorted sparsities with the mean, the std over seeds and the number of seeds of ``key`` at each."""
    values: dict[float, list[float]] = {}
    for point in points:
        values.setdefault(float(point["sparsity"]), []).append(float(point[key]))
    sparsities = sorted(values)
    means = [statistics.fmean(values[s]) for s in sparsities]
    stds = [statistics.stdev(values[s]) if len(values[s]) > 1 else 0.0 for s in sparsities]
    return sparsities, means, stds, [len(values[s]) for s in sparsities]


_REALISED = (("realised_sparsity_all", "-", "all weights"), ("realised_sparsity_sparsified", ":", "sparsified layers"))


def chance_accuracy(plan: Mapping[str, Any]) -> float:
    """1 / classes, the classes read from a run's ``plan.json``: the out-features of its last linear
    layer, which is the classifier of every model dstbench trains."""
    linear = [layer for layer in plan["layers"] if layer["kind"] == "linear"]
    if not linear:
        raise DstbenchError("cannot tell the number of classes: the plan has no linear (classifier) layer")
    return 1.0 / int(linear[-1]["shape"][0])


def sparsity_curve_figure(points: Sequence[Mapping[str, Any]], *, chance: Sequence[float] = ()) -> Figure:
    """Figure 3: test accuracy against sparsity (mean and ±1 std band over seeds), with chance
    accuracy marked, and beside it the realised sparsity against the nominal one, which the
    one-weight-per-layer floor caps at extreme sparsity."""
    if not points:
        raise NothingToPlot("nothing to plot: the sweep has no points")
    nominal = sorted({float(point["sparsity"]) for point in points})
    figure = Figure(figsize=(12, 4.4), layout="constrained")
    accuracy, realised = figure.subplots(1, 2)
    accuracy_lines, realised_lines = _Lines(), _Lines()
    ideal = [1.0 - s for s in nominal]
    realised_lines.plot(realised, ideal, ideal, "realised = nominal", color="grey", linewidth=1.0, linestyle="--")
    several_seeds = False
    for method in method_order(point["method"] for point in points):
        style = method_style(method)
        mine = [point for point in points if point["method"] == method]
        sparsities, means, stds, counts = _by_sparsity(mine, "test_acc")
        several_seeds |= max(counts) > 1
        x = [1.0 - s for s in sparsities]
        _band(accuracy, x, [100 * m for m in means], [100 * s for s in stds], style.color)
        accuracy_lines.plot(accuracy, x, [100 * m for m in means], _seed_label(method, counts), color=style.color,
                            marker=style.marker)  # fmt: skip
        for key, linestyle, where in _REALISED:
            _, real, _, _ = _by_sparsity(mine, key)
            realised_lines.plot(realised, x, [1.0 - r for r in real], f"{method}, {where}", color=style.color,
                                marker=style.marker, linestyle=linestyle)  # fmt: skip
    for value in sorted(set(chance)):
        accuracy.axhline(100 * value, color="grey", linestyle=":", linewidth=1.0, label=f"chance ({100 * value:.3g}%)")
    _log_sparsity_axis(accuracy, nominal)
    accuracy.set_xlabel("nominal sparsity (log scale of 1 - s)")
    accuracy.set_ylabel("test accuracy (%), mean ± std over seeds" if several_seeds else "test accuracy (%)")
    accuracy.set_title("Accuracy at extreme sparsity")
    accuracy.set_ylim(0, 101)
    accuracy.grid(alpha=0.3)
    _legend_outside(accuracy, title="method")
    _log_sparsity_axis(realised, nominal)
    _log_sparsity_axis(realised, nominal, y=True)
    realised.set_xlabel("nominal sparsity (log scale of 1 - s)")
    realised.set_ylabel("realised sparsity (log scale of 1 - s)")
    realised.set_title("Realised vs nominal (>= 1 weight per layer)")
    realised.grid(alpha=0.3)
    _legend_outside(realised, fontsize="x-small")
    return figure


def plot_sparsity_curve(
    points: Sequence[Mapping[str, Any]], out: str | Path, *, chance: Sequence[float] = ()
) -> list[Path]:
    """Write :func:`sparsity_curve_figure` as PNG and PDF."""
    return save_figure(sparsity_curve_figure(points, chance=chance), out)
