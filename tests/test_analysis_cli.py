"""The analysis commands on real (tiny) runs: the eight-point extreme-sparsity sweep, the three figures,
the report tables, every run's own FLOPs in summary.json, ITOP from snapshots, and one-line errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from dstbench.analysis.tables import COLUMNS
from dstbench.analysis.runs import find_runs
from dstbench.grid.sweep import DEFAULT_SPARSITIES
from dstbench.analysis.topology import itop_rate, update_iou_series
from dstbench.cli.app import main

@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine OpenMP's spinning makes
    every step several times slower (measured: 2.2 s vs 0.33 s of CPU per tiny run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ["--preset", "quick", "--max-test-samples", "32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rigl and set at all eight default sparsities (0.9 ... 0.999999): one epoch of 2 steps each."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", "--methods", "rigl,set", "--epochs", "1", "--max-train-samples", "32", "--out", str(out)]
    assert main([*argv, *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rigl (updating every 2 of 8 steps) and static, two seeds each."""
    out = tmp_path_factory.mktemp("compare")
    argv = ["compare", "--methods", "rigl,static", "--seeds", "0,1", "--epochs", "2", "--max-train-samples", "64"]
    assert main([*argv, "--hp", "rigl.delta_t=2", "--out", str(out), *TINY]) == 0
    return out


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def test_sweep_runs_every_point_and_records_nominal_and_realised_sparsity(sweep_dir: Path) -> None:
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert sorted((p["method"], p["sparsity"]) for p in points) == sorted(
        (m, s) for m in ("rigl", "set") for s in DEFAULT_SPARSITIES
    )
    for point in points:
        realised_all, realised = point["realised_sparsity_all"], point["realised_sparsity_sparsified"]
        assert 0.0 < realised_all <= realised <= point["sparsity"] + 1e-12
        assert point["test_acc"] is not None and point["train_flops"] > 0
    extreme = [p for p in points if p["sparsity"] == 0.999999]
    # One weight per layer is kept (k = n - floor(s n)), so the realised sparsity falls short of nominal.
    assert all(p["realised_sparsity_sparsified"] < 0.999999 for p in extreme)
    with open(sweep_dir / "sweep.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 16


def test_sparsity_curve_figure_from_the_sweep(sweep_dir: Path, tmp_path: Path) -> None:
    assert main(["plot", "sparsity-curve", str(sweep_dir), "--out", str(tmp_path / "curve.pdf")]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "curve.pdf").read_bytes()[:5] == b"%PDF-"


def test_iou_and_overhead_figures_from_real_runs(compare_dir: Path, tmp_path: Path) -> None:
    runs = [str(compare_dir / "rigl_s0.9_seed0"), str(compare_dir / "static_s0.9_seed0")]
    for extra in ([], ["--interval", "1"], ["--interval-steps", "2"], ["--per-update"]):
        out = tmp_path / f"iou{len(extra)}{extra[-1] if extra else ''}.png"
        assert main(["plot", "iou", *runs, "--out", str(out), *extra]) == 0
        assert out.stat().st_size > 1000 and out.with_suffix(".pdf").stat().st_size > 1000
    assert main(["plot", "overhead", str(compare_dir), "--out", str(tmp_path / "overhead.png")]) == 0
    assert (tmp_path / "overhead.png").stat().st_size > 1000 and (tmp_path / "overhead.pdf").stat().st_size > 1000


def test_learning_curves_are_the_seeds_mean_and_std_per_epoch(compare_dir: Path, tmp_path: Path) -> None:
    from dstbench.analysis.curves import curve_series

    series = curve_series(find_runs(compare_dir), ["test_acc", "train_loss"])
    assert [(c.label, c.n, c.epochs) for c in series["test_acc"]] == [("rigl (delta_t=2)", 2, (1, 2)), ("static", 2, (1, 2))]
    for metric, scale in (("test_acc", 100.0), ("train_loss", 1.0)):
        for curve, method in zip(series[metric], ("rigl", "static")):
            # Independently: each seed's metrics.jsonl, epoch by epoch.
            seeds = [[scale * json.loads(line)[metric] for line in (compare_dir / f"{method}_s0.9_seed{seed}" / "metrics.jsonl")
                      .read_text().splitlines()] for seed in (0, 1)]  # fmt: skip
            assert curve.mean == pytest.approx([(a + b) / 2 for a, b in zip(*seeds)])
            assert curve.std == pytest.approx([abs(a - b) / 2**0.5 for a, b in zip(*seeds)])
    out = tmp_path / "curves.png"
    assert main(["plot", "curves", str(compare_dir), "--out", str(out), "--metrics", "test_acc,test_loss,train_acc"]) == 0
    assert out.stat().st_size > 1000 and out.with_suffix(".pdf").stat().st_size > 1000


def test_curves_coincide_relative_to_their_panels_span() -> None:
    """A loss panel zooms in: 2.3012 and 2.3017 are far apart there, though within 0.05 % of each other."""
    from dstbench.analysis.curves import Curve, _coinciding

    def curve(label: str, *mean: float) -> Curve:
        return Curve(label, label, (1, 2), mean, (0.0, 0.0), 2)

    apart = [curve("rigl", 2.3017, 2.3014), curve("static", 2.3012, 2.3007)]
    assert _coinciding(apart) == ["", ""]
    same = [curve("rigl", 10.0, 11.0), curve("set", 50.0, 60.0), curve("static", 10.0, 11.1)]
    assert _coinciding(same) == ["", "", "rigl"]  # 0.1 of a 50-point span


def test_report_table_has_the_table_2_columns_and_seed_statistics(
    compare_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(compare_dir), "--baseline", "static"]) == 0
    printed = capsys.readouterr().out
    assert printed == (compare_dir / "report.md").read_text() + "\n"
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header == (
        "| method | model | dataset | epochs | distribution | sparsity | n | train FLOPs | train FLOPs (× dense) "
        "| epoch (s) | epoch time (× static) | epoch time (× dense) "
        "| inference FLOPs | mask updates | final IoU | mask-update time (%) | inside per-step hooks (%) | ITOP R_s |"
    )
    lines = printed.splitlines()
    rows = [line for line in lines[lines.index(header) + 2 :] if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| rigl (delta_t=2)", "| static"]
    rigl = rows[0].split(" | ")
    assert rigl[1:7] == ["tiny_cnn", "synthetic", "2", "erk", "90%", "2"] and rigl[13] == "3"  # 2 seeds; 3 updates (TF RigL's clock)
    assert rigl[16] == "0.00"  # rigl has no per-step hook
    assert rigl[11] == "n/a"  # no dense run among them
    assert float(rigl[10]) > 0 and rows[1].split(" | ")[10] == "1.00"  # static against itself
    assert "Wall times measured on: cpu, 1 thread.\n" in printed  # the runs' --threads (default 1)
    stats_header = next(line for line in lines if line.startswith("| method") and "p (Welch)" in line)
    assert "Δ vs static (95% CI)" in stats_header
    rigl_stats = lines[lines.index(stats_header) + 2].split(" | ")
    assert "±" in rigl_stats[7] and rigl_stats[8].startswith("[")
    with open(compare_dir / "report.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["method"], r["n"], r["topology_updates"], r["baseline"]) for r in table] == [
        ("rigl", "2", "3.0", "static"),
        ("static", "2", "0.0", "static"),
    ]
    compare_table = (compare_dir / "compare.md").read_text()
    assert header in compare_table.splitlines()  # compare prints the same tables
    assert "Δ vs rigl (95% CI)" in compare_table  # its baseline: the first of --methods


def test_report_out_leaves_the_folder_of_runs_untouched(
    compare_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in compare_dir.iterdir())
    stamps = {name: (compare_dir / name).stat().st_mtime_ns for name in before if (compare_dir / name).is_file()}
    out = tmp_path / "elsewhere" / "tables"
    assert main(["report", str(compare_dir), "--baseline", "static", "--out", str(out)]) == 0
    assert capsys.readouterr().out == (out / "report.md").read_text() + "\n"
    assert (out / "report.csv").read_text().splitlines()[0].startswith("method,")
    assert sorted(p.name for p in compare_dir.iterdir()) == before
    assert {name: (compare_dir / name).stat().st_mtime_ns for name in stamps} == stamps


def test_every_run_records_its_own_training_and_inference_flops(compare_dir: Path) -> None:
    static = _summary(compare_dir / "static_s0.9_seed0")["flops"]
    rigl = _summary(compare_dir / "rigl_s0.9_seed0")["flops"]
    # Static: 3 f_S per sample, so relative to dense training exactly f_S / f_D.
    assert static["train_flops_relative"] == pytest.approx(static["inference_flops"] / static["dense_forward_flops"])
    assert static["dense_train_flops"] == pytest.approx(3 * static["dense_forward_flops"] * 64 * 2)
    # RigL pays a dense weight gradient at its 3 update steps out of 8 (TF RigL's clock): + 3/8 (f_D - f_S) per sample.
    extra = 3 / 8 * (rigl["dense_forward_flops"] - rigl["inference_flops"]) * 64 * 2
    assert rigl["train_flops"] == pytest.approx(3 * rigl["inference_flops"] * 64 * 2 + extra)


def test_itop_rate_from_snapshots_equals_the_engine_s(compare_dir: Path) -> None:
    for run in find_runs(compare_dir):
        assert run.summary is not None
        assert itop_rate(run) == pytest.approx(run.summary["itop_rate"], abs=1e-15)
    rigl = find_runs(compare_dir / "rigl_s0.9_seed0")[0]
    records = [json.loads(line) for line in (rigl.path / "topology.jsonl").read_text().splitlines()]
    assert [p.iou for p in update_iou_series(rigl)] == pytest.approx([r["iou"] for r in records])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{tmp}/missing"], "no such directory"),
        (["report", "{tmp}"], "neither a run directory nor a folder of runs"),
        (["plot", "iou", "{tmp}/missing", "--out", "{tmp}/x.png"], "no such directory"),
        (["plot", "sparsity-curve", "{tmp}", "--out", "{tmp}/x.png"], "is not a sweep folder"),
        (["plot", "overhead", "{tmp}", "--out", "{tmp}/x.svg"], "must end in .png or .pdf"),
        (["plot", "curves", "{tmp}", "--out", "{tmp}/x.png", "--metrics", "test_acc,lr"], "expected names from test_acc"),
        (["plot", "curves", "{tmp}", "--out", "{tmp}/x.png"], "neither a run directory nor a folder of runs"),
        (["flops", "--model", "tiny_cnn", "--input-size", "32", "--method", "rigl"], "needs --epochs and"),
        (["flops", "--model", "no_such_net", "--input-size", "32"], "unknown model"),
        (["sweep", "--methods", "rigl", "--sparsities", "0.9,1.0", "--out", "{tmp}/s"], "sparsity must be in"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dstbench: error: ") and err.count("\n") == 1 and message in err
