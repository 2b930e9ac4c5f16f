"""Report tables from hand-made summaries: every setting is a cell (nothing merged or dropped), n = 1 says
so, one format per column, Welch's comparison with the right baseline cell, and the paper's gaps."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dstbench.analysis.report import report_rows
from dstbench.analysis.tables import accuracy_matrix, accuracy_table, format_tables, markdown_table
from dstbench.core.errors import ConfigError


def _summary(method: str, acc: float, seed: int = 0, sparsity: float = 0.9, **config: Any) -> dict[str, Any]:
    settings = {"model": "tiny_cnn", "dataset": "synthetic", "epochs": 2, "distribution": "erk", "dense_layers": "none",
                "lr": 0.05, "seed": seed, "out": f"runs/{method}{seed}", **config}  # fmt: skip
    sparse = method != "dense"
    return {
        "method": method,
        "sparsity": sparsity,
        "seed": seed,
        "test_acc": acc,
        "model": settings["model"],
        "dataset": settings["dataset"],
        "epochs": settings["epochs"],
        "distribution": settings["distribution"],
        "dense_layers": settings["dense_layers"],
        "hyperparameters": {},
        "needs": {"sparse": sparse},
        "topology_updates": 3,
        "update_time_fraction": 0.001,
        "step_hook_time_fraction": 0.25 if method == "bidst" else 0.0,
        "itop_rate": 0.137,
        "final_iou": 0.5,
        "train_seconds": 10.0,
        "config": settings,
    }


def _cells(table: str) -> list[list[str]]:
    return [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]


def test_every_setting_is_its_own_row_and_the_differing_option_is_shown() -> None:
    summaries = [
        _summary("rigl", 0.255, 0),
        _summary("rigl", 0.128, 0, epochs=1),  # issue 14: this 1-epoch run used to vanish from Table 1
        _summary("rigl", 0.30, 0, model="cifar_resnet32", dataset="cifar10"),
        _summary("rigl", 0.26, 0, lr=0.1),
    ]
    rows = report_rows(summaries)
    assert len(rows) == 4
    table = _cells(accuracy_table(rows))
    header = accuracy_table(rows).splitlines()[0]
    assert "other settings" in header
    assert [(r[1], r[2], r[3], r[6]) for r in table] == [
        ("tiny_cnn", "synthetic", "2", "lr=0.05"),
        ("tiny_cnn", "synthetic", "1", "lr=0.05"),
        ("cifar_resnet32", "cifar10", "2", "lr=0.05"),
        ("tiny_cnn", "synthetic", "2", "lr=0.1"),
    ]
    matrix = _cells(accuracy_matrix(rows))
    assert sorted(row[-1] for row in matrix) == ["12.80 (n=1)", "25.50 (n=1)", "26.00 (n=1)", "30.00 (n=1)"]


def test_seeds_group_and_n1_cells_say_so() -> None:
    rows = report_rows([_summary("rigl", 0.5, 0), _summary("rigl", 0.6, 1), _summary("set", 0.7, 0)])
    table = _cells(accuracy_table(rows))
    rigl, set_ = table
    # t[.975,1] = 12.706: 55 ± 63.5 would be [-8.53, 118.53]; an accuracy lies in [0, 100].
    assert rigl[6:9] == ["2", "55.00 ± 7.07", "[0.00, 100.00]"]
    assert set_[6:9] == ["1", "70.00 (n=1)", "n=1: no interval"]
    assert set_[9:12] == ["+15.00", "-", "n=1 vs 2: no test"]
    assert "nan" not in accuracy_table(rows).lower() and "± 0.00" not in accuracy_table(rows)


def test_baseline_cell_must_share_every_other_setting() -> None:
    summaries = [
        *(_summary("rigl", a, s) for s, a in enumerate([0.90, 0.91, 0.92])),
        *(_summary("bidst", a, s) for s, a in enumerate([0.95, 0.96, 0.97])),
        _summary("bidst", 0.5, 0, epochs=1),
    ]
    rows = report_rows(summaries, baseline="rigl")
    by_epochs = {(r["method"], r["epochs"]): r for r in rows}
    bidst = by_epochs[("bidst", 2)]
    # Equal spreads, n = 3 each: Welch df = 4, t = 0.05 / sqrt(2 * 0.0001 / 3) = 6.124.
    assert bidst["diff"] == pytest.approx(0.05)
    assert bidst["verdict"] == "better" and bidst["p_value"] < 0.01
    assert bidst["diff_ci_low"] == pytest.approx(0.05 - 2.776 * math.sqrt(2 * 0.0001 / 3), abs=1e-4)
    assert by_epochs[("bidst", 1)]["verdict"] == "no rigl cell"
    with pytest.raises(ConfigError, match="not among the methods"):
        report_rows(summaries, baseline="set")


def test_cost_table_shows_mask_update_and_per_step_time_apart_in_one_format() -> None:
    rows = report_rows([_summary("bidst", 0.9), _summary("rigl", 0.9)])
    header, _, *body = markdown_table(rows).splitlines()
    names = header.strip("| ").split(" | ")
    cells = [dict(zip(names, line.strip("| ").split(" | "))) for line in body]
    assert [(c["mask-update time (%)"], c["inside per-step hooks (%)"], c["ITOP R_s"]) for c in cells] == [
        ("0.10", "25.00", "0.137"),  # read from the old field name, step_hook_time_fraction
        ("0.10", "0.00", "0.137"),
    ]


def _timed(method: str, seed: int, epoch_seconds: float | None, device: str = "cpu, 1 thread", **config: Any) -> dict[str, Any]:
    """A summary written after the rename: its hook share under the new name, its steady epoch time."""
    summary = _summary(method, 0.9, seed, **config)
    del summary["step_hook_time_fraction"]
    summary["step_hook_share"] = 0.125 if method == "bidst" else 0.0
    if epoch_seconds is not None:
        summary["wall_time"] = {"epoch_seconds": epoch_seconds, "device": device}
    return summary


def _cost(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    header, _, *body = markdown_table(rows).splitlines()
    names = header.strip("| ").split(" | ")
    return [dict(zip(names, line.strip("| ").split(" | "))) for line in body]


def test_epoch_time_relative_to_static_and_dense_from_the_runs_themselves() -> None:
    summaries = [
        _timed("bidst", 0, 6.0), _timed("bidst", 1, 10.0),  # mean 8.0 s
        _timed("rigl", 0, 5.0),
        _timed("static", 0, 4.0),
        _timed("dense", 0, 2.5, distribution="uniform"),  # dense ignores the distribution
        _timed("set", 0, None),  # a run from before the wall-time record
    ]  # fmt: skip
    rows = report_rows(summaries)
    by = {row["method"]: row for row in rows}
    assert (by["bidst"]["epoch_seconds"], by["bidst"]["epoch_vs_static"], by["bidst"]["epoch_vs_dense"]) == (8.0, 2.0, 3.2)
    assert (by["rigl"]["epoch_vs_static"], by["rigl"]["epoch_vs_dense"], by["static"]["epoch_vs_static"]) == (1.25, 2.0, 1.0)
    assert by["set"]["epoch_seconds"] is None and by["set"]["epoch_vs_static"] is None
    cells = {c["method"]: c for c in _cost(rows)}
    shown = ("epoch (s)", "epoch time (× static)", "epoch time (× dense)", "inside per-step hooks (%)")
    assert [cells["bidst"][k] for k in shown] == ["8.00", "2.00", "3.20", "12.50"]
    assert [cells["set"][k] for k in shown] == ["n/a", "n/a", "n/a", "0.00"]
    assert [cells["dense"][k] for k in shown[:3]] == ["2.50", "n/a", "1.00"]  # no static cell at sparsity 0
    assert "Wall times measured on" not in format_tables(rows) and cells["set"]["device"] == "n/a"


@pytest.mark.parametrize(
    "seconds, shown",
    [(0.6384, "0.638"), (1.1, "1.10"), (99.94, "99.9"), (99.96, "100"), (152.3, "152"), (1523.4, "1523")],
)
def test_epoch_seconds_have_three_digits_and_no_artefacts(seconds: float, shown: str) -> None:
    """A CPU epoch of ResNet-32 printed as "152." (``#.3g`` keeps the point) and would print 1.52e+03."""
    (cells,) = _cost(report_rows([_timed("rigl", 0, seconds)]))
    assert cells["epoch (s)"] == shown


def test_epoch_ratios_need_the_same_device_and_the_table_names_it() -> None:
    rows = report_rows([_timed("rigl", 0, 3.0, "NVIDIA H200"), _timed("static", 0, 2.0, "NVIDIA H200")])
    assert rows[0]["epoch_vs_static"] == 1.5 and rows[0]["epoch_vs_dense"] is None
    assert "Wall times measured on: NVIDIA H200.\n" in format_tables(rows)
    assert "device" not in _cost(rows)[0]
    mixed = report_rows([_timed("rigl", 0, 3.0, "NVIDIA H200"), _timed("static", 0, 2.0, "cpu, 2 threads")])
    assert mixed[0]["epoch_vs_static"] is None
    assert [(c["device"], c["epoch time (× static)"]) for c in _cost(mixed)] == [("NVIDIA H200", "n/a"), ("cpu, 2 threads", "1.00")]


def test_a_dense_baseline_is_compared_with_every_sparsity_and_layout() -> None:
    """The lt report said "no dense cell" beside its dense row: dense ignores sparsity and its layout,
    and the dense run's ``save_rewind_step`` (it only keeps a copy of the weights) is not a setting."""
    summaries = [
        *(_summary("dense", a, s, save_rewind_step=1, distribution="uniform") for s, a in enumerate([0.60, 0.62])),
        *(_summary("lt", a, s, sparsity=0.36, save_rewind_step=None) for s, a in enumerate([0.70, 0.72])),
        *(_summary("lt", a, s, sparsity=0.36, save_rewind_step=None, lr=0.1) for s, a in enumerate([0.70, 0.72])),
    ]
    rows = report_rows(summaries)
    assert [(r["method"], r["sparsity"], r["baseline_label"]) for r in rows] == [
        ("dense", 0.0, "dense"), ("lt", 0.36, "dense"), ("lt", 0.36, None),
    ]  # fmt: skip
    assert rows[1]["diff"] == pytest.approx(0.10) and rows[1]["verdict"] != "no dense cell"
    assert rows[2]["verdict"] == "no dense cell"  # another learning rate is another setting


def test_a_config_written_before_an_option_existed_joins_the_cell_of_its_default() -> None:
    from dstbench.config import TrainConfig

    old = _summary("rigl", 0.50, 0)
    new = _summary("rigl", 0.52, 1, structure=TrainConfig().structure, budget=TrainConfig().budget)
    other = _summary("rigl", 0.40, 2, structure="nm:2:4")
    rows = report_rows([old, new, other])
    assert [(r["n"], r["accuracies"]) for r in rows] == [(2, [0.50, 0.52]), (1, [0.40])]


def test_paper_columns_are_gaps_to_dense() -> None:
    cifar = {"model": "cifar_resnet32", "dataset": "cifar10"}
    summaries = [
        *(_summary("rigl", a, s, **cifar) for s, a in enumerate([0.50, 0.52])),
        *(_summary("dense", a, s, sparsity=0.9, distribution="uniform", **cifar) for s, a in enumerate([0.60, 0.62])),
        _summary("set", 0.4, 0),  # no published counterpart (tiny_cnn)
    ]
    text = format_tables(report_rows(summaries, paper=True), paper=True)
    section = text[text.index("## The paper beside us") :].split("\n\n")
    assert "2 of 3 cells have no published counterpart" in section[1]
    matched = format_tables(report_rows(summaries[:2], paper=True), paper=True)  # rigl alone
    assert "Every cell has a published counterpart." in matched and "0 of" not in matched
    (row,) = _cells(section[2])
    # Ours: 51 - 61 = -10 points; paper Table 1, RigL ERK 90 %: 93.55 - 94.9 = -1.35; difference -8.65.
    assert row[0] == "rigl" and row[5] == "51.00 ± 1.41"
    assert row[6].startswith("-10.00 [") and row[7:] == ["Table 1", "93.55", "94.90", "-1.35", "-8.65"]


def test_intervals_stay_inside_the_possible_range_and_the_note_says_so() -> None:
    """Issue 20: the README printed ``95% CI [95.01, 102.45]`` for an accuracy."""
    rows = report_rows([_summary("rigl", 0.9836, 0), _summary("rigl", 0.9910, 1),
                        _summary("set", 0.05, 0), _summary("set", 0.95, 1)])  # fmt: skip
    rigl, set_ = _cells(accuracy_table(rows))
    low = 100 * (0.9873 - 12.706 * 0.0037)  # half-width t * s / sqrt(n), s = 0.0074 / sqrt(2)
    assert rigl[8] == f"[{low:.2f}, 100.00]"
    assert set_[8] == "[0.00, 100.00]"
    diff = set_[9].split(" ", 1)[1]
    assert diff == "[-100.00, +100.00]"  # Welch's interval of -48.73 points is wider than [-100, 100]
    for row in rows:
        for key in ("test_acc_ci_low", "test_acc_ci_high"):
            assert 0.0 <= row[key] <= 1.0
        for key in ("diff_ci_low", "diff_ci_high"):
            assert row[key] is None or -1.0 <= row[key] <= 1.0
    assert "clipped to the possible range [0, 100]" in format_tables(rows)
