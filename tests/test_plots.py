"""Figures read back through their artists: one style per method everywhere, seeds as mean and band,
legends outside the data in numeric order, coinciding lines named, chance marked, overhead as shares,
and a one-line error instead of empty axes."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dstbench.analysis.plots import (
    NothingToPlot,
    chance_accuracy,
    iou_figure,
    save_figure,
    sparsity_curve_figure,
)
from dstbench.analysis.overhead import Series, overhead_figure, overhead_series
from dstbench.analysis.runs import find_runs, load_run
from dstbench.analysis.styles import BUILTIN_STYLES, method_order, method_style
from dstbench.cli.app import main


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ["--preset", "quick", "--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rigl (updating every 2 of 8 steps) at two sparsities with two seeds, and static."""
    out = tmp_path_factory.mktemp("runs")
    argv = ["compare", "--methods", "rigl,static", "--seeds", "0,1", "--sparsities", "0.99,0.9", "--epochs", "2"]
    assert main([*argv, "--hp", "rigl.delta_t=2", "--out", str(out), *TINY]) == 0
    return out


def _lines(axis: Axes) -> dict[str, Line2D]:
    """Labelled lines of an axis (matplotlib's private ``_child...`` labels left out)."""
    return {str(line.get_label()): line for line in axis.get_lines() if not str(line.get_label()).startswith("_")}


def _legend_labels(axis: Axes) -> list[str]:
    legend = axis.get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def _assert_legends_outside(figure: Figure) -> None:
    """Every legend's box, as saved, overlaps no axes' data area."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lays the figure out as saving does
    renderer = canvas.get_renderer()
    for axis in figure.axes:
        legend = axis.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        for other in figure.axes:
            assert not box.overlaps(other.get_window_extent(renderer)), (axis.get_title(), other.get_title())


def _points(accuracies: Mapping[tuple[str, float], Sequence[float]]) -> list[dict[str, Any]]:
    """Sweep points for (method, sparsity) -> accuracy per seed; realised = nominal for simplicity."""
    return [
        {"method": method, "sparsity": sparsity, "seed": seed, "test_acc": acc,
         "realised_sparsity_all": sparsity, "realised_sparsity_sparsified": sparsity}  # fmt: skip
        for (method, sparsity), accs in accuracies.items()
        for seed, acc in enumerate(accs)
    ]


# -- styles ----------------------------------------------------------------------------------------
def test_builtin_styles_are_distinct() -> None:
    assert len({(s.color, s.marker) for s in BUILTIN_STYLES.values()}) == len(BUILTIN_STYLES)
    assert len({s.color for s in BUILTIN_STYLES.values()}) == len(BUILTIN_STYLES)


@given(st.text(min_size=1, max_size=20))
def test_plugin_styles_are_stable_and_never_a_builtins(name: str) -> None:
    style = method_style(name)
    assert style == method_style(name)
    if name not in BUILTIN_STYLES:
        assert style.color not in {s.color for s in BUILTIN_STYLES.values()}


def test_plugin_style_is_the_same_in_another_process() -> None:
    code = "from dstbench.analysis.styles import method_style; print(method_style('my-plugin'))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout  # fmt: skip
        for seed in ("1", "2")
    }
    assert outputs == {str(method_style("my-plugin")) + "\n"}


def test_method_order_puts_builtins_first_in_fixed_order() -> None:
    assert method_order(["zz-plugin", "set", "rigl", "aa-plugin", "rigl"]) == ["rigl", "set", "aa-plugin", "zz-plugin"]


def test_a_method_keeps_its_style_across_figures_and_subsets(runs_dir: Path) -> None:
    """rigl is drawn with the same colour and marker whatever else is in the figure, in every figure."""
    curve_a = sparsity_curve_figure(_points({("rigl", 0.9): [0.5], ("set", 0.9): [0.6]}))
    curve_b = sparsity_curve_figure(_points({("my-plugin", 0.9): [0.1], ("bidst", 0.9): [0.2], ("rigl", 0.9): [0.7]}))
    summaries = [run.summary for run in find_runs(runs_dir) if run.summary]
    overhead = overhead_figure(summaries)
    iou = iou_figure(find_runs(runs_dir))
    rigl_lines = [
        _lines(curve_a.axes[0])["rigl"],
        _lines(curve_b.axes[0])["rigl"],
        *[line for label, line in _lines(overhead.axes[0]).items() if label.startswith("rigl")],
        *[line for label, line in _lines(iou.axes[0]).items() if label.startswith("rigl")],
    ]
    assert len(rigl_lines) == 5  # curve, curve, overhead share, and iou at two sparsities
    expected = method_style("rigl")
    assert {(line.get_color(), line.get_marker()) for line in rigl_lines} == {(expected.color, expected.marker)}
    plugin = _lines(curve_b.axes[0])["my-plugin"]
    assert (plugin.get_color(), plugin.get_marker()) == (method_style("my-plugin").color, method_style("my-plugin").marker)


# -- sparsity curve --------------------------------------------------------------------------------
def test_seeds_are_one_mean_line_with_a_std_band() -> None:
    accs = {("rigl", 0.9): [0.80, 0.90, 0.85], ("rigl", 0.99): [0.40, 0.50, 0.60]}
    figure = sparsity_curve_figure(_points(accs))
    accuracy = figure.axes[0]
    lines = _lines(accuracy)
    assert list(lines) == ["rigl (mean ± std, n=3)"]  # one line, not three
    line = lines["rigl (mean ± std, n=3)"]
    np.testing.assert_allclose(line.get_xdata(), [1 - 0.9, 1 - 0.99])
    np.testing.assert_allclose(line.get_ydata(), [85.0, 50.0])
    (band,) = [c for c in accuracy.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    std_90 = 100 * statistics.stdev([0.80, 0.90, 0.85])
    std_99 = 100 * statistics.stdev([0.40, 0.50, 0.60])
    assert ys.min() == pytest.approx(50.0 - std_99) and ys.max() == pytest.approx(85.0 + std_90)


def test_single_seed_has_no_band_and_no_seed_note() -> None:
    figure = sparsity_curve_figure(_points({("set", 0.9): [0.8]}))
    assert list(_lines(figure.axes[0])) == ["set"]
    assert not [c for c in figure.axes[0].collections if isinstance(c, PolyCollection)]


def test_chance_accuracy_is_marked() -> None:
    figure = sparsity_curve_figure(_points({("set", 0.9): [0.8]}), chance=[0.1])
    chance = _lines(figure.axes[0])["chance (10%)"]
    assert list(chance.get_ydata()) == [10.0, 10.0]


def test_chance_accuracy_comes_from_the_runs_classifier(runs_dir: Path) -> None:
    run = load_run(runs_dir / "static_s0.9_seed0")
    assert chance_accuracy(run.plan) == pytest.approx(0.1)  # tiny_cnn on 10 synthetic classes


def test_coinciding_lines_say_so() -> None:
    figure = sparsity_curve_figure(_points({("rigl", 0.9): [0.7], ("static", 0.9): [0.7], ("set", 0.9): [0.6]}))
    lines = _lines(figure.axes[0])
    assert set(lines) == {"rigl", "static (coincides with rigl)", "set"}
    assert lines["static (coincides with rigl)"].get_linestyle() == "--"
    assert lines["set"].get_linestyle() == "-"


def test_sparsity_curve_legends_are_outside_the_axes() -> None:
    figure = sparsity_curve_figure(_points({("rigl", s): [0.9 - s / 2] for s in (0.9, 0.99, 0.999)}), chance=[0.1])
    _assert_legends_outside(figure)


# -- IoU -------------------------------------------------------------------------------------------
def test_iou_lines_per_setting_in_numeric_order_with_seed_means(runs_dir: Path) -> None:
    runs = find_runs(runs_dir)
    runs.sort(key=lambda run: -run.sparsity)  # the figure must not depend on the order it is given
    figure = iou_figure(runs, per_update=True)
    assert _legend_labels(figure.axes[0]) == [
        "rigl 90% (mean ± std, n=2)",
        "rigl 99% (mean ± std, n=2)",
        "static 90% (no topology change, n=2)",
        "static 99% (no topology change, n=2)",
    ]
    lines = _lines(figure.axes[0])
    assert lines["rigl 90% (mean ± std, n=2)"].get_linestyle() == "-"
    assert lines["rigl 99% (mean ± std, n=2)"].get_linestyle() == "--"
    from dstbench.analysis.topology import update_iou_series

    seeds = [update_iou_series(load_run(runs_dir / f"rigl_s0.9_seed{seed}")) for seed in (0, 1)]
    expected = [statistics.fmean(pair) for pair in zip(*[[p.iou for p in s] for s in seeds])]
    np.testing.assert_allclose(lines["rigl 90% (mean ± std, n=2)"].get_ydata(), expected)
    _assert_legends_outside(figure)


def test_iou_by_default_compares_masks_one_epoch_apart_for_every_method(runs_dir: Path) -> None:
    """Figure 4's data: the fixed-interval IoU (comparable across cadences), n per line, and the
    static lines (IoU 1 at both sparsities) drawn as coinciding, not hidden under each other."""
    from dstbench.analysis.topology import interval_iou_series

    figure = iou_figure(find_runs(runs_dir))
    assert _legend_labels(figure.axes[0]) == [
        "rigl 90% (mean ± std, n=2)",
        "rigl 99% (mean ± std, n=2)",
        "static 90% (mean ± std, n=2)",
        "static 99% (mean ± std, n=2) (coincides with static 90% (mean ± std, n=2))",
    ]
    assert figure.axes[0].get_title() == "Mask IoU between masks 1 epoch(s) apart (sparsified layers, global)"
    lines = _lines(figure.axes[0])
    for sparsity in ("0.9", "0.99"):
        seeds = [load_run(runs_dir / f"rigl_s{sparsity}_seed{seed}") for seed in (0, 1)]
        assert seeds[0].steps_per_epoch == 4  # 64 samples in batches of 16: Δ = 4 steps, 2 epochs
        series = [interval_iou_series(run, 4) for run in seeds]
        line = lines[f"rigl {100 * float(sparsity):g}% (mean ± std, n=2)"]
        np.testing.assert_allclose(line.get_xdata(), [50.0, 100.0])
        np.testing.assert_allclose(line.get_ydata(), [statistics.fmean(p) for p in zip(*[[c.iou for c in s] for s in series])])
        assert all(value < 1.0 for value in line.get_ydata())  # rigl changed its mask within each epoch
    twin = lines["static 99% (mean ± std, n=2) (coincides with static 90% (mean ± std, n=2))"]
    assert list(twin.get_ydata()) == [1.0, 1.0] and twin.get_linestyle() == "--"


def test_one_seed_still_says_n(runs_dir: Path) -> None:
    figure = iou_figure([load_run(runs_dir / "rigl_s0.9_seed0")], interval=2)
    assert _legend_labels(figure.axes[0]) == ["rigl (n=1)"]
    assert figure.axes[0].get_title() == "Mask IoU between masks 2 step(s) apart (sparsified layers, global)"
    np.testing.assert_allclose(_lines(figure.axes[0])["rigl (n=1)"].get_xdata(), [25.0, 50.0, 75.0, 100.0])


def test_iou_of_runs_that_never_update_is_a_one_line_error(
    runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NothingToPlot, match="no run changed its mask"):
        iou_figure([load_run(runs_dir / "static_s0.9_seed0")], per_update=True)
    out = tmp_path / "iou.png"
    assert main(["plot", "iou", str(runs_dir / "static_s0.9_seed0"), "--per-update", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dstbench: error: nothing to plot") and len(err.strip().splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".pdf").exists()


# -- overhead --------------------------------------------------------------------------------------
def _summary(method: str, sparsity: float, seed: int, fraction: float, updates: int, seconds: float,
             hooks: float | None = 0.0) -> dict[str, Any]:
    summary = {"method": method, "sparsity": sparsity, "seed": seed, "update_time_fraction": fraction,
               "topology_updates": updates, "update_seconds": seconds, "train_seconds": 1000.0}  # fmt: skip
    if hooks is not None:
        summary["step_hook_share"] = hooks
    return summary


def test_overhead_shows_update_and_per_step_shares_with_spread_over_seeds() -> None:
    summaries = [
        _summary("rigl", 0.9, 0, 0.010, 10, 0.20),
        _summary("rigl", 0.9, 1, 0.030, 10, 0.40),
        _summary("rigl", 0.99, 0, 0.005, 4, 0.04),
        _summary("bidst", 0.9, 0, 0.004, 2, 0.10, hooks=0.08),
        {**_summary("bidst", 0.9, 1, 0.004, 2, 0.10, hooks=None), "step_hook_time_fraction": 0.10},  # before the rename
        _summary("static", 0.9, 0, 0.0, 0, 0.0, hooks=None),  # a run older than the hook record
    ]
    panels = overhead_series(summaries)
    at_90, at_99 = 1.0 - 0.9, 1.0 - 0.99
    assert panels["updates"] == [
        Series("bidst", (at_90,), (0.4,), (0.0,), (2,)),
        Series("rigl", (at_90, at_99), (2.0, 0.5), (pytest.approx(2**0.5), 0.0), (2, 1)),
        Series("static", (at_90,), (0.0,), (0.0,), (1,)),
    ]
    bidst_hooks = panels["hooks"][0]
    assert (bidst_hooks.method, bidst_hooks.mean, bidst_hooks.std[0]) == ("bidst", (9.0,), pytest.approx(2**0.5))
    assert [s.method for s in panels["hooks"]] == ["bidst", "rigl"]  # static recorded none
    assert [(s.method, s.mean) for s in panels["per_update"]] == [("bidst", (50.0,)), ("rigl", (30.0, 10.0))]
    figure = overhead_figure(summaries)
    updates, hooks, per_update = figure.axes
    lines = _lines(updates)
    np.testing.assert_allclose(lines["rigl (mean ± std, n=1-2)"].get_xdata(), [0.1, 0.01])  # x is 1 - sparsity
    np.testing.assert_allclose(lines["rigl (mean ± std, n=1-2)"].get_ydata(), [2.0, 0.5])  # percent
    assert len(updates.containers) == 1 and len(hooks.containers) == 1  # error bars where seeds differ
    assert "static (not recorded)" in _legend_labels(hooks)
    assert "static (no mask updates)" in _legend_labels(per_update)
    assert "per-step hooks" in hooks.get_ylabel()
    _assert_legends_outside(figure)


def test_overlapping_markers_are_labelled_coincident() -> None:
    """Issue 22: with one sparsity, rigl's marker hid under mest's."""
    summaries = [
        _summary("rigl", 0.9, 0, 0.0100, 10, 0.20),
        _summary("mest", 0.9, 0, 0.0101, 10, 0.20),  # within 2 % of the panel's top
        _summary("set", 0.9, 0, 0.0200, 10, 0.40),
    ]
    panels = overhead_series(summaries)
    assert [(s.method, s.coincides) for s in panels["updates"]] == [("rigl", ""), ("set", ""), ("mest", "rigl")]
    assert [(s.method, s.coincides) for s in panels["hooks"]] == [("rigl", ""), ("set", "rigl"), ("mest", "rigl")]
    labels = _legend_labels(overhead_figure(summaries).axes[0])
    assert "mest (n=1) (coincides with rigl)" in labels and "set (n=1)" in labels
    partial = overhead_series([*summaries, _summary("rigl", 0.99, 0, 0.001, 1, 0.01), _summary("mest", 0.99, 0, 0.02, 1, 0.4)])
    assert partial["updates"][-1].coincides == "rigl at 90%"


def test_overhead_from_real_runs_and_no_runs(runs_dir: Path, tmp_path: Path) -> None:
    assert main(["plot", "overhead", str(runs_dir), "--out", str(tmp_path / "o.png")]) == 0
    with pytest.raises(NothingToPlot):
        overhead_figure([])


def test_saved_png_and_pdf(tmp_path: Path) -> None:
    paths = save_figure(sparsity_curve_figure(_points({("set", 0.9): [0.8]})), tmp_path / "f.png")
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
