"""Figure 5 analogue: what a method's own work costs, against sparsity, from finished runs.

Three panels side by side, each a share or a time a method is responsible for:

* **mask updates**: the share of training time spent in topology updates;
* **per-step hooks**: the share spent inside the method's per-step hooks (BiDST learns its scores
  every step). It sits beside the update share because a method that updates rarely but works every
  step (BiDST: 0.4 % in updates, 8 % in hooks) would otherwise look like the cheapest;
* **time per update** (ms).

Shares, not wall seconds: the same runs took 5 s or 230 s depending on the load of a shared machine,
while the shares move far less; how much they still move shows in the **error bars** (±1 std over
seeds; the legend gives n). Where markers would sit on top of each other (within 2 % of the panel's
height at the same sparsity), the later one is hollow and its legend entry says "(coincides with
...)", so no method silently hides another. :func:`overhead_series` computes what is drawn, so tests
read the numbers, not the pixels.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dstbench.analysis.plots import NothingToPlot, _legend_outside, _log_sparsity_axis, _percent, _seed_label, save_figure
from dstbench.analysis.styles import method_order, method_style

__all__ = ["Series", "PANELS", "overhead_series", "overhead_figure", "plot_overhead"]

# Two markers closer than this share of the panel's highest value are drawn on top of each other.
OVERLAP = 0.02


@dataclass(frozen=True)
class Series:
    """One method's points on one panel: x is 1 - sparsity; mean and std over seeds; n seeds per point."""

    method: str
    x: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n: tuple[int, ...]
    coincides: str = ""
    """``"rigl"`` (every point), ``"rigl at 90%"`` (some), or empty: the earlier series it would hide under."""

    @property
    def label(self) -> str:
        base = _seed_label(self.method, self.n) if max(self.n) > 1 else f"{self.method} (n=1)"
        return f"{base} (coincides with {self.coincides})" if self.coincides else base


def _update_share(summary: Mapping[str, Any]) -> float | None:
    return 100 * float(summary["update_time_fraction"])


def _hook_share(summary: Mapping[str, Any]) -> float | None:
    """Runs before the rename call the share ``step_hook_time_fraction``; older ones did not record it."""
    value = summary.get("step_hook_share", summary.get("step_hook_time_fraction"))
    return None if value is None else 100 * float(value)


def _per_update(summary: Mapping[str, Any]) -> float | None:
    updates = int(summary["topology_updates"])
    return 1000 * float(summary["update_seconds"]) / updates if updates > 0 else None


PANELS = (
    ("updates", "time in mask updates (% of training time)", "Mask updates", _update_share),
    ("hooks", "time inside per-step hooks (% of training time)", "Per-step method work", _hook_share),
    ("per_update", "time per mask update (ms)", "Cost of one mask update", _per_update),
)
"""(key, y label, title, value of one run or None where it has none)."""


def _series(method: str, runs: Sequence[Mapping[str, Any]], value: Any) -> Series | None:
    by_sparsity: dict[float, list[float]] = {}
    for run in runs:
        if (v := value(run)) is not None:
            by_sparsity.setdefault(float(run["sparsity"]), []).append(v)
    if not by_sparsity:
        return None
    sparsities = sorted(by_sparsity)
    values = [by_sparsity[s] for s in sparsities]
    return Series(
        method,
        tuple(1.0 - s for s in sparsities),
        tuple(statistics.fmean(v) for v in values),
        tuple(statistics.stdev(v) if len(v) > 1 else 0.0 for v in values),
        tuple(len(v) for v in values),
    )


def _mark_coincidences(series: list[Series]) -> list[Series]:
    """Each series that would sit on an earlier one's markers, named after the first such."""
    top = max((abs(m) for s in series for m in s.mean), default=0.0)
    tolerance = OVERLAP * top
    marked: list[Series] = []
    for current in series:
        twin = ""
        for earlier in marked:
            shared = [x for x, m in zip(current.x, current.mean) for ex, em in zip(earlier.x, earlier.mean)
                      if x == ex and abs(m - em) <= tolerance]  # fmt: skip
            if shared:
                where = "" if len(shared) == len(current.x) else " at " + ", ".join(_percent(1.0 - x) for x in shared)
                twin = earlier.method + where
                break
        marked.append(Series(current.method, current.x, current.mean, current.std, current.n, twin))
    return marked


def overhead_series(summaries: Sequence[Mapping[str, Any]]) -> dict[str, list[Series]]:
    """Per panel (:data:`PANELS` keys), one :class:`Series` per method that has values there, methods in
    the fixed figure order, coincidences marked. Missing values (no updates, a run older than the
    hook record) leave a method out of that panel only."""
    if not summaries:
        raise NothingToPlot("nothing to plot: no finished runs")
    methods = method_order(s["method"] for s in summaries)
    panels: dict[str, list[Series]] = {}
    for key, _, _, value in PANELS:
        drawn = [s for m in methods if (s := _series(m, [r for r in summaries if r["method"] == m], value)) is not None]
        panels[key] = _mark_coincidences(drawn)
    return panels


def overhead_figure(summaries: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure 5: the three panels of the module docstring, one colour and marker per method."""
    panels = overhead_series(summaries)
    nominal = sorted({float(s["sparsity"]) for s in summaries})
    methods = method_order(s["method"] for s in summaries)
    figure = Figure(figsize=(17, 4.4), layout="constrained")
    for axis, (key, ylabel, title, _) in zip(figure.subplots(1, len(PANELS)), PANELS):
        drawn = {series.method for series in panels[key]}
        for series in panels[key]:
            style = method_style(series.method)
            hollow = {"markerfacecolor": "none", "linestyle": "--"} if series.coincides else {}
            axis.plot(series.x, series.mean, label=series.label, color=style.color, marker=style.marker, clip_on=False,
                      **hollow)  # fmt: skip
            if any(s > 0 for s in series.std):
                axis.errorbar(series.x, series.mean, yerr=series.std, fmt="none", ecolor=style.color, capsize=4, alpha=0.7)
        for method in (m for m in methods if m not in drawn):
            style = method_style(method)
            why = "no mask updates" if key == "per_update" else "not recorded"
            axis.plot([], [], color=style.color, marker=style.marker, linestyle="none", label=f"{method} ({why})")
        _log_sparsity_axis(axis, nominal)
        axis.set_xlabel("sparsity (log scale of 1 - s)")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        _legend_outside(axis, title="method (error bars: ±1 std over seeds)", fontsize="x-small")
    return figure


def plot_overhead(summaries: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Write :func:`overhead_figure` as PNG and PDF."""
    return save_figure(overhead_figure(summaries), out)
