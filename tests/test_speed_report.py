"""The report's speed table, ``plot speed`` (Figure 5 analogue) and ``plot crossover``: the data behind
them, checked exactly (not pixels), with fast settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dstbench.analysis.report import report_rows, run_summaries, write_report
from dstbench.analysis.runs import complete_runs
from dstbench.analysis.speed import speed_rows
from dstbench.analysis.speed_plots import crossover_figure, speed_figure
from dstbench.cli.app import main
from dstbench.speed.crossover import LayerTiming, crossover, layer_shapes, wins_from


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeds of SET and one of RigL, tiny and finished."""
    folder = tmp_path_factory.mktemp("speedreport")
    for method, seed in (("set", 0), ("set", 1), ("rigl", 0)):
        argv = ["train", "--preset", "quick", "--method", method, "--seed", str(seed), "--synthetic-train-samples", "32",
                "--synthetic-test-samples", "16", "--epochs", "1", "--batch-size", "16", "--quiet", "--out", str(folder / f"{method}{seed}")]  # fmt: skip
        assert main(argv) == 0
    return folder


def _speed(csr: tuple[float, float], rebuild: float, updates: int, threads: int = 1) -> dict[str, Any]:
    """A speed.json as `dstbench speed` writes it, with chosen numbers: csr's (batch 1, batch 16) speedup."""
    timed = lambda x: {"seconds": 1.0, "images_per_second": 1.0, "speedup_over_masked": x}  # noqa: E731
    proved = {"status": "proved", "rebuild_seconds_per_update": rebuild, "updates": updates, "rebuild_seconds_total": rebuild * updates}
    return {
        "batch_size": 16, "provenance": {"threads": threads},
        "backends": {"masked": {**proved, "rebuild_seconds_per_update": 0.0, "rebuild_seconds_total": 0.0}, "csr": proved,
                     "bsr": {"status": "unavailable", "reason": "backend bsr: layer x's mask is not block-structured"}},
        "end_to_end": {"batch_1": {"masked": timed(1.0), "csr": timed(csr[0])}, "batch_16": {"masked": timed(1.0), "csr": timed(csr[1])}},
        "training_step": {"masked": timed(1.0), "csr": timed(csr[0] / 2)},
    }  # fmt: skip


def test_speed_rows_table_and_figure_follow_the_speed_files(runs: Path) -> None:
    (runs / "set0" / "speed.json").write_text(json.dumps(_speed((2.0, 0.5), 0.010, 4)))
    (runs / "set1" / "speed.json").write_text(json.dumps(_speed((4.0, 0.7), 0.030, 6)))
    summaries = run_summaries(complete_runs(runs))
    by_dir = {summary["run_dir"]: summary for summary in summaries}
    rows = speed_rows(report_rows(summaries), by_dir)
    assert [(row["method"], row["backend"]) for row in rows] == [("set", "masked"), ("set", "csr"), ("set", "bsr")]  # rigl: not timed
    csr = rows[1]
    assert (csr["runs"], csr["proved"], csr["latency_speedup"], csr["throughput_speedup"], csr["train_speedup"]) == (2, 2, 3.0, 0.6, 1.5)
    assert csr["rebuild_seconds_per_update"] == pytest.approx(0.02) and csr["updates"] == 5.0
    assert csr["rebuild_seconds_total"] == pytest.approx((0.04 + 0.18) / 2)
    shares = [0.04 / by_dir[str(runs / "set0")]["train_seconds"], 0.18 / by_dir[str(runs / "set1")]["train_seconds"]]
    assert csr["overhead_fraction"] == pytest.approx(sum(shares) / 2)
    assert rows[2]["proved"] == 0 and rows[2]["status"] == "unavailable" and "not block-structured" in rows[2]["reason"]

    text = write_report(runs)
    assert "## Speed (measured, speedup over masked)" in text
    assert "| set | 90% | csr | 2/2 | 1.50x | 3.00x | 0.60x | 16 | 1 | 20.0 | 5 | 0.11 |" in text
    assert "| set | 90% | bsr | 0/2 | unavailable: backend bsr: layer x's mask is not block-structured |" in text

    figure = speed_figure(rows)
    training, latency, throughput, overhead = figure.axes
    bars = {axis: {c.get_label(): [p.get_height() for p in c.patches] for c in axis.containers} for axis in figure.axes}
    assert bars[training] == {"csr": [1.5]} and bars[latency] == {"csr": [3.0]} and bars[throughput] == {"csr": [pytest.approx(0.6)]}  # masked, the baseline, has no bar
    assert bars[overhead] == {"csr": [pytest.approx(0.11)]}
    assert [line.get_ydata()[0] for line in latency.lines] == [1.0]  # the break-even line


def test_plot_speed_command_and_nothing_to_plot(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (runs / "set0" / "speed.json").write_text(json.dumps(_speed((2.0, 0.5), 0.010, 4)))
    assert main(["plot", "speed", str(runs), "--out", str(tmp_path / "speed.png")]) == 0
    assert (tmp_path / "speed.png").stat().st_size > 0 and (tmp_path / "speed.pdf").exists()
    assert main(["plot", "speed", str(runs / "rigl0"), "--out", str(tmp_path / "none.png")]) == 2
    assert "nothing to plot: no run has a speed.json with a backend besides masked" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("speedups", "expected"),
    [([0.5, 0.9, 1.2, 3.0], 0.95), ([1.5, 0.9, 1.2, 3.0], 0.95), ([2.0, 2.0, 2.0, 2.0], 0.5), ([2.0, 2.0, 2.0, 0.8], None)],
)
def test_wins_from_is_the_start_of_the_winning_run_up_to_the_highest_sparsity(speedups: list[float], expected: float | None) -> None:
    points = [{"sparsity": s, "speedup": x} for s, x in zip((0.5, 0.9, 0.95, 0.99), speedups)]
    assert wins_from(points) == expected


def test_crossover_times_every_distinct_layer_of_the_model() -> None:
    data = crossover("tiny_cnn", [0.5, 0.9], ["csr", "bsr", "shrink"], LayerTiming(rounds=1, min_time=0.001))
    shapes = {name: (list(module.weight.shape), list(shape)) for name, module, shape in layer_shapes("tiny_cnn")}
    assert {name: (layer["weight"], layer["input"]) for name, layer in data["layers"].items()} == shapes
    for name, layer in data["layers"].items():
        numel = torch.Size(layer["weight"]).numel()
        rows, cols = layer["weight"][0], numel // layer["weight"][0]
        assert ("bsr" in layer["backends"]) == (rows % 4 == 0 and cols % 4 == 0), name  # the stem and the head have no 4x4 tiling
        for backend, series in layer["backends"].items():
            assert [p["sparsity"] for p in series["points"]] == [0.5, 0.9] and all(p["speedup"] > 0 for p in series["points"])
            assert series["wins_from"] == wins_from(series["points"])
        csr = layer["backends"]["csr"]["points"]
        assert [p["flop_ratio"] for p in csr] == [numel / round(0.5 * numel), numel / round(0.1 * numel)]  # the exact count
        assert [p["flop_ratio"] for p in layer["backends"]["shrink"]["points"]] == [rows / max(1, round(d * rows)) for d in (0.5, 0.1)]
    figure = crossover_figure(data)
    assert len(figure.axes) == 3
    csr_axis = figure.axes[0]
    drawn = {line.get_label().split(" ")[0]: list(line.get_ydata()) for line in csr_axis.lines if not line.get_label().startswith("_")}
    assert drawn == {name: [p["speedup"] for p in layer["backends"]["csr"]["points"]] for name, layer in data["layers"].items()}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny_cnn", "--backends", "semi-structured"], "crossover times backends csr, bsr, shrink per layer, not 'semi-structured'"),
        (["--model", "tiny_cnn", "--sparsities", "0.5,1.5"], "--sparsities must be"),
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
    ],
)
def test_plot_crossover_bad_input_is_one_line(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "crossover", *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dstbench: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_a_shrunk_layer_keeps_its_bias() -> None:
    from dstbench.speed.crossover import shrunk_layer

    layer = nn.Linear(6, 4)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:2] = True
    small = shrunk_layer(layer, mask)
    x = torch.randn(3, 6)
    torch.testing.assert_close(small(x), nn.functional.linear(x, layer.weight * mask, layer.bias)[:, :2])
