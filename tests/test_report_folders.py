"""``report`` reads what it should and nothing else (issue 22, item 4): every entry it skips is listed
with its reason, a copy of a run is refused, and an entry that is not a finished run is an error
unless ``--skip-incomplete``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dstbench.cli.app import main

GRID = ["compare", "--methods", "static", "--seeds", "0,1", "--preset", "quick", "--epochs", "1",
        "--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "32", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("grid") / "runs"
    assert main([*GRID, "--out", str(folder)]) == 0
    return folder


@pytest.fixture
def runs(grid: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(grid, copy, symlinks=True)
    return copy


def _report(folder: Path, tmp_path: Path, *extra: str) -> int:
    return main(["report", str(folder), "--out", str(tmp_path), *extra])


def test_a_clean_folder_reports_without_a_word(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _report(runs, tmp_path) == 0
    out, err = capsys.readouterr()
    assert err == "" and "| static | tiny_cnn | synthetic | 1 | erk | 90% | 2 |" in out


def test_a_copy_of_a_run_is_refused(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(runs / "static_s0.9_seed0", runs / "static_s0.9_seed0.bak")
    for extra in ((), ("--skip-incomplete",)):
        assert _report(runs, tmp_path, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dstbench: error: {runs / 'static_s0.9_seed0.bak'} and {runs / 'static_s0.9_seed0'} are the same run")
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize("damage", ["emptied", "a file", "config loop", "unfinished"])
def test_an_entry_that_is_not_a_finished_run_is_an_error_or_listed(
    damage: str, runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = runs / "static_s0.9_seed1"
    if damage == "emptied":
        shutil.rmtree(victim)
        victim.mkdir()
        reason = "no config.json: not a run (empty or never started)"
    elif damage == "a file":
        shutil.rmtree(victim)
        victim.write_text("not a run")
        reason = "a file, not a run folder"
    elif damage == "config loop":
        (victim / "config.json").unlink()
        (victim / "config.json").symlink_to("loop")
        (victim / "loop").symlink_to("config.json")
        reason = "its config.json is a symbolic link"
    else:
        (victim / "summary.json").unlink()
        reason = "not finished (no summary.json)"
    assert _report(runs, tmp_path) == 2
    assert capsys.readouterr().err == (
        f"dstbench: error: {victim} is not a finished run ({reason}); pass --skip-incomplete to report the rest\n"
    )
    assert _report(runs, tmp_path, "--skip-incomplete") == 0
    out, err = capsys.readouterr()
    assert err == f"dstbench: skipped {victim}: {reason}\n"
    assert "| static | tiny_cnn | synthetic | 1 | erk | 90% | 1 |" in out  # the seed left


def test_a_folder_of_figures_beside_the_runs_is_not_a_run(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (runs / "figures").mkdir()
    (runs / "figures" / "iou.png").write_bytes(b"png")
    assert _report(runs, tmp_path) == 0
    assert capsys.readouterr().err == ""
