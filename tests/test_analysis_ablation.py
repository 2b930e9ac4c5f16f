"""Hyper-parameter grids: ``sweep --hp-grid`` runs every value into its own named folder and prints its
table; ``plot ablation`` draws one line per sparsity with error bars from the seeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from dstbench.analysis.ablation import ablation_series, plot_ablation
from dstbench.grid.sweep import parse_hp_grid
from dstbench.cli.app import main
from dstbench.core.errors import ConfigError


def _point(lam: float, sparsity: float, seed: int, acc: float) -> dict[str, Any]:
    return {"method": "bidst", "sparsity": sparsity, "seed": seed, "test_acc": acc, "hyperparameters": {"lam": lam}}


POINTS = [
    _point(1e-6, 0.9, 0, 0.80), _point(1e-6, 0.9, 1, 0.82), _point(1e-2, 0.9, 0, 0.70), _point(1e-2, 0.9, 1, 0.74),
    _point(1e-6, 0.99, 0, 0.50), _point(1e-2, 0.99, 0, 0.40),
]  # fmt: skip


def test_series_means_and_seed_spread_by_sparsity() -> None:
    series = ablation_series(POINTS, "bidst.lam")
    assert list(series) == [("bidst", 0.9), ("bidst", 0.99)]
    (v1, m1, s1, n1), (v2, m2, s2, n2) = series[("bidst", 0.9)]
    assert (v1, n1, v2, n2) == (1e-6, 2, 1e-2, 2)
    assert m1 == pytest.approx(0.81) and s1 == pytest.approx(0.02 / 2**0.5)
    assert m2 == pytest.approx(0.72) and s2 == pytest.approx(0.04 / 2**0.5)
    assert [s for *_, s, _ in series[("bidst", 0.99)]] == [None, None]  # one seed: no error bar
    with pytest.raises(ConfigError, match="no point of this sweep has"):
        ablation_series(POINTS, "beta")


def test_figure_has_a_log_axis_one_line_per_sparsity_and_seed_error_bars(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    captured: list[Figure] = []
    import dstbench.analysis.ablation as ablation

    original = ablation.save_figure
    ablation.save_figure = lambda figure, out: captured.append(figure) or original(figure, out)  # type: ignore[assignment, func-returns-value]
    try:
        paths = plot_ablation(POINTS, "lam", tmp_path / "lam.png")
    finally:
        ablation.save_figure = original
    assert [p.suffix for p in paths] == [".png", ".pdf"] and paths[0].read_bytes()[:4] == b"\x89PNG"
    (axis,) = captured[0].axes
    assert axis.get_xscale() == "log"  # 1e-6 .. 1e-2 spans four decades
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["90%", "99%"]
    lines = [line for line in axis.get_lines() if len(line.get_xdata()) == 2 and line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in lines] == [pytest.approx([81.0, 72.0]), pytest.approx([50.0, 40.0])]


def test_parse_hp_grid_errors() -> None:
    assert parse_hp_grid(["bidst.lam=1e-6, 1e-4", "beta=1"]) == {"bidst.lam": ["1e-6", "1e-4"], "beta": ["1"]}
    for bad in (["lam"], ["lam="], ["=1"]):
        with pytest.raises(ConfigError, match="--hp-grid expects"):
            parse_hp_grid(bad)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_sweep_hp_grid_names_runs_by_value_and_prints_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ablation"
    argv = ["sweep", "--methods", "bidst,static", "--hp-grid", "bidst.lam=1e-6,1e-2", "--sparsities", "0.9",
            "--preset", "quick", "--epochs", "1", "--max-train-samples", "32", "--max-test-samples", "32",
            "--batch-size", "16", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["bidst_s0.9_lam1e-2_seed0", "bidst_s0.9_lam1e-6_seed0", "static_s0.9_seed0"]
    assert json.loads((out / "bidst_s0.9_lam1e-2_seed0" / "config.json").read_text())["hp"]["lam"] == 0.01  # typed by BiDST's field
    # The engine times the per-step hooks apart from mask updates: BiDST learns its scores every step.
    bidst = json.loads((out / "bidst_s0.9_lam1e-2_seed0" / "summary.json").read_text())
    static = json.loads((out / "static_s0.9_seed0" / "summary.json").read_text())
    assert bidst["step_hook_seconds"] > 0 and static["step_hook_seconds"] == 0.0
    assert bidst["step_hook_share"] == bidst["step_hook_seconds"] / bidst["train_seconds"]
    assert "step_hook_time_fraction" not in bidst  # renamed: the share is not the method's whole cost
    assert bidst["wall_time"]["warm_up_included"] and bidst["wall_time"]["epochs_measured"] == 1
    printed = capsys.readouterr().out
    assert "| bidst (lam=0.01, update_frequency=2) |" in printed and "| bidst (lam=1e-06, update_frequency=2) |" in printed
    assert printed.count("| static |") == 3  # accuracy, Table 1 layout and cost tables
    assert main(["plot", "ablation", str(out), "--hp", "bidst.lam", "--out", str(tmp_path / "a.png")]) == 0


def test_sparsity_colours_are_a_sequential_palette_no_method_uses_and_the_legend_is_outside() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex, to_rgb

    from dstbench.analysis.ablation import ablation_figure
    from dstbench.analysis.styles import method_colors, sparsity_colors

    points = POINTS + [_point(1e-6, 0.95, 0, 0.7), _point(1e-2, 0.95, 0, 0.6)]
    figure = ablation_figure(points, "lam")
    (axis,) = figure.axes
    colors = [to_hex(container.lines[0].get_color()) for container in axis.containers]  # each errorbar's data line
    assert colors == [sparsity_colors([0.9, 0.95, 0.99])[s] for s in (0.9, 0.95, 0.99)]
    assert colors == ["#9bd93c", "#21918c", "#463480"]  # viridis at 0.85, 0.5, 0.15: light to dark
    assert len(set(colors)) == 3 and not set(colors) & method_colors()
    lightness = [sum(to_rgb(c)) for c in colors]
    assert lightness == sorted(lightness, reverse=True)  # sequential: darker as sparsity grows
    assert sparsity_colors([0.5]) == {0.5: "#21918c"}
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    legend = axis.get_legend().get_window_extent(canvas.get_renderer())
    assert legend.x0 >= axis.get_window_extent(canvas.get_renderer()).x1  # beside the axes, never over data
