"""Hyper-parameter ablations (BiDST Figure C.1): test accuracy against one hyper-parameter's value.

Reads the points of a sweep folder written with ``dstbench sweep --hp-grid NAME=v1,v2,...``: one line
per (method, sparsity), the mean over seeds with error bars of ± one sample standard deviation (none
for a single seed), on a log axis when the values span two decades or more (λ from 1e-7 to 1e-1).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dstbench.core.errors import ConfigError

from dstbench.analysis.plots import _legend_outside, save_figure
from dstbench.analysis.styles import method_style, sparsity_colors

__all__ = ["ablation_series", "ablation_figure", "plot_ablation"]

Series = dict[tuple[str, float], list[tuple[float, float, float | None, int]]]


def _split_name(hp: str) -> tuple[str | None, str]:
    """``bidst.lam`` -> (``bidst``, ``lam``); ``lam`` -> (None, ``lam``)."""
    owner, _, name = hp.partition(".")
    return (owner, name) if name else (None, hp)


def ablation_series(points: Sequence[Mapping[str, Any]], hp: str) -> Series:
    """(method, sparsity) -> [(value, mean accuracy, std or None, n seeds)], by increasing value."""
    method, name = _split_name(hp)
    chosen = [p for p in points if method is None or p["method"] == method]
    with_value = [p for p in chosen if name in p.get("hyperparameters", {})]
    if not with_value:
        raise ConfigError(f"no point of this sweep has a hyper-parameter {hp!r} (was it run with --hp-grid {hp}=...?)")
    groups: dict[tuple[str, float], dict[float, list[float]]] = {}
    for point in with_value:
        raw = point["hyperparameters"][name]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"hyper-parameter {name!r} has a non-numeric value {raw!r}; an ablation plot needs numbers") from None
        groups.setdefault((point["method"], float(point["sparsity"])), {}).setdefault(value, []).append(float(point["test_acc"]))
    series: Series = {}
    for key, by_value in sorted(groups.items()):
        series[key] = [
            (value, statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else None, len(accs))
            for value, accs in sorted(by_value.items())
        ]
    return series


def _spans_decades(values: Sequence[float]) -> bool:
    return min(values) > 0 and max(values) / min(values) >= 100


def ablation_figure(points: Sequence[Mapping[str, Any]], hp: str) -> Figure:
    """Accuracy (%) against ``hp``, one line per (method, sparsity): sparsities coloured from a
    sequential palette that no method uses (:func:`~dstbench.analysis.styles.sparsity_colors`), methods
    told apart by their marker, the legend outside the axes."""
    series = ablation_series(points, hp)
    _, name = _split_name(hp)
    methods = sorted({method for method, _ in series})
    colors = sparsity_colors(sparsity for _, sparsity in series)
    figure = Figure(figsize=(7, 4), layout="constrained")
    axis = figure.add_subplot()
    seeds = sorted({n for line in series.values() for *_, n in line})
    for (method, sparsity), line in series.items():
        xs = [value for value, *_ in line]
        ys = [100 * mean for _, mean, _, _ in line]
        errors = [0.0 if std is None else 100 * std for _, _, std, _ in line]
        label = f"{100 * sparsity:.6g}%" if len(methods) == 1 else f"{method} {100 * sparsity:.6g}%"
        axis.errorbar(xs, ys, yerr=errors, marker=method_style(method).marker, color=colors[sparsity], capsize=3, label=label)
    values = [value for line in series.values() for value, *_ in line]
    if _spans_decades(values):
        axis.set_xscale("log")
    axis.set_xlabel(name)
    axis.set_ylabel("test accuracy (%)")
    spread = "mean ± std over " + ("/".join(map(str, seeds)) + " seeds" if seeds != [1] else "1 seed (no error bar)")
    axis.set_title(f"{', '.join(methods)}: accuracy against {name} ({spread})", fontsize=9)
    _legend_outside(axis, title="sparsity" if len(methods) == 1 else "method, sparsity", fontsize="x-small")
    axis.grid(alpha=0.3)
    return figure


def plot_ablation(points: Sequence[Mapping[str, Any]], hp: str, out: str | Path) -> list[Path]:
    """Write :func:`ablation_figure` as PNG and PDF."""
    return save_figure(ablation_figure(points, hp), out)
