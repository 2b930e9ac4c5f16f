"""``dstbench reproduce``: the Table 1 grid (both distributions, three sparsities, dense once per seed),
resumed by re-issuing the command, and Figure 4 drawn from the runs; tiny settings throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dstbench.grid.reproduce import SCALES, TARGETS, _methods, _parts
from dstbench.cli.app import main

TINY = ["--seeds", "0", "--epochs", "1", "--max-train-samples", "32", "--max-test-samples", "32", "--batch-size", "16",
        "--quiet"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_table_targets_run_both_distributions_at_three_sparsities_and_dense_once() -> None:
    parts = _parts(TARGETS["table1"], ["rigl", "bidst"], dense=True)
    assert [(sub, names, sparsities, options) for sub, names, sparsities, options in parts] == [
        ("uniform", ["rigl", "bidst"], (0.9, 0.95, 0.98), {"distribution": "uniform"}),
        ("erk", ["rigl", "bidst"], (0.9, 0.95, 0.98), {"distribution": "erk"}),
        ("dense", ["dense"], (0.9,), {}),
    ]
    assert SCALES["paper"].seeds == (0, 1, 2) and SCALES["smoke"].preset == "quick"


def test_reproduce_table1_smoke_reports_every_cell_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reproduce", "table1", "--scale", "smoke", "--methods", "static,dense", "--out", str(tmp_path), *TINY]
    assert main(argv) == 0
    first = capsys.readouterr().out
    runs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*") if (p / "summary.json").exists())
    assert runs == sorted(
        ["dense/dense_s0.9_seed0", *(f"{d}/static_s{s}_seed0" for d in ("erk", "uniform") for s in ("0.9", "0.95", "0.98"))]
    )
    table = first[first.index("## Accuracy (Table 1 layout") :].split("\n\n")[1].splitlines()
    assert table[0].endswith("| 0% | 90% | 95% | 98% |")
    assert sum(line.startswith("| static |") for line in table) == 2 and "## The paper beside us" in first
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*/summary.json")}
    assert main(argv) == 0  # re-issued: every run is reused, nothing retrains
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*/summary.json")} == stamps
    assert (tmp_path / "report.md").read_text() + "\n" == capsys.readouterr().out


def test_reproduce_figure4_draws_the_iou_figure(tmp_path: Path) -> None:
    assert main(["reproduce", "figure4", "--scale", "smoke", "--methods", "rigl", "--out", str(tmp_path), *TINY]) == 0
    assert (tmp_path / "figure4.png").read_bytes()[:4] == b"\x89PNG"
    assert "figure4.png" in (tmp_path / "report.md").read_text()


def test_reproduce_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "table1", "--scale", "smoke", "--methods", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["reproduce", "table1", "--scale", "smoke", "--preset", "quick", "--out", str(tmp_path)]) == 2
    assert "--preset and --config do not apply" in capsys.readouterr().err


def test_installed_plugins_join_a_target_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: an entry-point plugin put itself into Table 1's grid and stopped it at run 19."""
    from dataclasses import dataclass

    from dstbench.core import registry
    from dstbench.core.updater import MaskUpdater

    @dataclass
    class Plugin(MaskUpdater):
        name = "plugin-x"

    monkeypatch.setitem(registry._REGISTRY, "plugin-x", Plugin)
    assert "plugin-x" in registry.list_methods()
    sparse, dense = _methods(None)
    assert "plugin-x" not in sparse and dense and {"rigl", "bidst", "static"} <= set(sparse)
    assert _methods(["rigl", "plugin-x"]) == (["rigl", "plugin-x"], False)
    extended, dense = _methods(None, ["plugin-x", "rigl"])  # --extra-methods: added once, after the paper's
    assert extended == [*sparse, "plugin-x"] and dense
