"""Every ``reproduce`` target end to end at the micro scale, with every method of its grid (LT through
its pipeline included), so that no method can fall out of a target again (issue 20: LT and a plugin
each stopped ``reproduce table1`` in its middle).

Slow by design, kept within budget: the micro scale trains each cell for 28 steps of a tiny CNN at one
seed and the highest sparsity of each part: the three tests took 35 s on the shared 2-core machine at
a load average of about 5, and 160 s at 16. ``table-b1`` at this scale is ``table1``'s grid (both take the quick
preset's model), so it is run into ``table1``'s folder and must reuse every run: that checks its grid
without training it twice.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from dstbench.cli.app import main
from dstbench.grid.reproduce import _methods

SPARSE, _ = _methods(None)


def _rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    assert all(row["n"] == 1 and row["test_acc_mean"] is not None for row in rows)
    return rows


def _cells(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return sorted((row["method"], row["distribution"], row["sparsity"]) for row in rows)


def test_table1_and_table_b1_run_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "lt" in SPARSE and len(SPARSE) >= 17
    assert main(["reproduce", "table1", "--scale", "micro", "--out", str(tmp_path), "--quiet"]) == 0
    for dist in ("uniform", "erk"):
        rows = _rows(tmp_path / dist / "compare.json")
        assert _cells(rows) == sorted((method, dist, 0.98) for method in SPARSE)
        lt = next(row for row in rows if row["method"] == "lt")
        # LT's cell is its last round, charged for the whole pipeline (dense run and round 1 before it).
        assert lt["label"] == "lt" and lt["run_dirs"] == [str(tmp_path / dist / "lt_seed0" / "round02")]
        assert lt["train_flops_relative"] > 1.0
    assert [row["method"] for row in _rows(tmp_path / "dense" / "compare.json")] == ["dense"]
    report = capsys.readouterr().out
    assert all(f"| {method} " in report for method in [*SPARSE, "dense"])
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("summary.json")}
    assert len(stamps) == 2 * (len(SPARSE) - 1 + 3) + 1  # LT: dense, round01, round02 per distribution

    # `dstbench report` of a part reads LT's pipeline folder too: its dense run and both rounds.
    assert main(["report", str(tmp_path / "erk"), "--out", str(tmp_path / "erk-report")]) == 0
    with (tmp_path / "erk-report" / "report.csv").open() as table:
        lines = [row for row in csv.DictReader(table) if row["method"] in ("lt", "dense")]
    assert sorted((row["method"], row["sparsity"]) for row in lines) == [("dense", "0.0"), ("lt", "0.9"), ("lt", "0.98")]
    capsys.readouterr()

    assert main(["reproduce", "table-b1", "--scale", "micro", "--out", str(tmp_path), "--quiet"]) == 0
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("summary.json")} == stamps
    assert "Table B.1" in (tmp_path / "report.md").read_text()


def test_figure3_runs_every_sparse_method_at_the_extreme_point(tmp_path: Path) -> None:
    assert main(["reproduce", "figure3", "--scale", "micro", "--out", str(tmp_path), "--quiet"]) == 0
    points = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"]
    assert sorted((p["method"], p["sparsity"]) for p in points) == sorted((m, 0.999999) for m in SPARSE)
    # LT at 90 % a round needs 6 rounds to 99.9999 %: the pipeline ran them all.
    assert sorted(p.name for p in (tmp_path / "sweep" / "lt_seed0").iterdir() if p.is_dir()) == [
        "dense", *(f"round{r:02d}" for r in range(1, 7))
    ]
    assert (tmp_path / "figure3.png").read_bytes()[:4] == b"\x89PNG"


def test_figure4_runs_every_sparse_method(tmp_path: Path) -> None:
    assert main(["reproduce", "figure4", "--scale", "micro", "--out", str(tmp_path), "--quiet"]) == 0
    assert _cells(_rows(tmp_path / "erk" / "compare.json")) == sorted((m, "erk", 0.9) for m in SPARSE)
    assert (tmp_path / "figure4.png").read_bytes()[:4] == b"\x89PNG"
