"""Figure 5 analogues of measured speed, and where each sparse kernel starts to win.

* :func:`speed_figure` (``plot speed``): per cell of the accuracy table (method at its sparsity), the
  end-to-end speedup of each backend over ``masked`` of one training step (the paper's Figure 5 left;
  backends that train), of inference at batch 1 and at the measured batch, and the
  re-compression overhead (rebuild time per mask update x updates): the paper's Figure 5, with
  measured kernels instead of its compiler. A backend refused on a cell has no bar; the break-even
  line (1x) is drawn, so a loss reads as a loss.
* :func:`crossover_figure` (``plot crossover``): per backend, each distinct layer's speedup against
  sparsity on the model's real shapes, with the sparsity it wins from in its legend entry.

Both take the data the tests check (:func:`dstbench.analysis.speed.speed_rows`,
:func:`dstbench.speed.crossover.crossover`'s JSON) and follow :mod:`.plots`' rules: legends outside,
a figure with nothing to draw raises :class:`~dstbench.analysis.plots.NothingToPlot`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from dstbench.analysis.plots import NothingToPlot, _legend_outside, _log_sparsity_axis

__all__ = ["speed_figure", "crossover_figure", "BACKEND_COLORS"]

BACKEND_COLORS = {"masked": "#7f7f7f", "shrink": "#2ca02c", "csr": "#1f77b4", "bsr": "#ff7f0e", "semi-structured": "#9467bd"}


_TIMES = FuncFormatter(lambda value, _: f"{value:g}x")
_TIMES_2_5 = FuncFormatter(lambda value, _: f"{value:g}x" if round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else "")


def _color(backend: str) -> str:
    return BACKEND_COLORS.get(backend, "#8c564b")


def _cell(row: Mapping[str, Any]) -> str:
    return f"{row['label']}\n{100 * row['sparsity']:.6g}%"


def _bars(axis: Axes, rows: Sequence[Mapping[str, Any]], key: str, cells: list[str], backends: list[str]) -> None:
    """Grouped bars: one group per cell, one bar per backend with a value (a refused one has none)."""
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = {_cell(row): row[key] for row in rows if row["backend"] == backend and row[key] is not None}
        xs = [j + (i - (len(backends) - 1) / 2) * width for j, cell in enumerate(cells) if cell in values]
        heights = [values[cell] for cell in cells if cell in values]
        axis.bar(xs, heights, width, color=_color(backend), label=backend)
    axis.set_xticks(range(len(cells)), cells, fontsize="small")
    axis.grid(axis="y", alpha=0.3)


def speed_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Four panels over the cells: speedup of a training step, of inference at batch 1 and at the
    measured batch, and the re-compression overhead (s)."""
    timed = [row for row in rows if row["proved"] and row["backend"] != "masked"]
    if not timed:
        raise NothingToPlot("nothing to plot: no run has a speed.json with a backend besides masked (run `dstbench speed RUN_DIR`)")
    cells = list(dict.fromkeys(_cell(row) for row in timed))
    backends = list(dict.fromkeys(row["backend"] for row in timed))
    figure = Figure(figsize=(max(14.0, 1.8 * len(cells) * 4), 4.4), layout="constrained")
    training, latency, throughput, overhead = figure.subplots(1, 4)
    batches = sorted({b for row in timed for b in row["batch_sizes"]})
    for axis, key, title in (
        (training, "train_speedup", f"Training step, batch {','.join(map(str, batches))}"),
        (latency, "latency_speedup", "Inference, batch 1"),
        (throughput, "throughput_speedup", f"Inference, batch {','.join(map(str, batches))}"),
    ):
        _bars(axis, timed, key, cells, backends)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="break-even (1x)")
        axis.set_ylabel("speedup over masked (x)")
        axis.set_title(title, fontsize="medium")
    _bars(overhead, timed, "rebuild_seconds_total", cells, backends)
    overhead.set_ylabel("seconds: rebuild per update x updates")
    overhead.set_title("Re-compression overhead", fontsize="medium")
    _legend_outside(overhead, title="backend")
    return figure


def crossover_figure(data: Mapping[str, Any]) -> Figure:
    """One panel per backend: each layer's speedup against sparsity (log(1 - s) axis), break-even at 1x."""
    backends = list(dict.fromkeys(name for layer in data["layers"].values() for name in layer["backends"]))
    if not backends:
        raise NothingToPlot(f"nothing to plot: no layer of {data['model']} was timed")
    figure = Figure(figsize=(10.0, 4.2 * len(backends)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(len(backends), 1))
    colors = [f"C{i % 10}" for i in range(len(data["layers"]))]
    for axis, backend in zip(axes, backends):
        sparsities: set[float] = set()
        for color, (name, layer) in zip(colors, data["layers"].items()):
            series = layer["backends"].get(backend)
            if series is None:
                continue
            points = series["points"]
            sparsities.update(p["sparsity"] for p in points)
            wins = series["wins_from"]
            label = f"{name} {'x'.join(map(str, layer['weight']))}: " + ("loses throughout" if wins is None else f"wins from {100 * wins:.6g}%")
            axis.plot([1.0 - p["sparsity"] for p in points], [p["speedup"] for p in points], marker="o", color=color, label=label)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        _log_sparsity_axis(axis, sorted(sparsities))
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(_TIMES)
        axis.yaxis.set_minor_formatter(_TIMES_2_5)
        axis.set_xlabel("sparsity (log scale of 1 - s)")
        axis.set_ylabel("speedup over masked (log scale)")
        axis.set_title(f"{data['model']}: {backend} per layer, batch {data['batch']}", fontsize="medium")
        axis.grid(alpha=0.3)
        _legend_outside(axis, fontsize="x-small")
    return figure
