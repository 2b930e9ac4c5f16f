"""Grids under Ctrl-C and ``--jobs``: one line, a resumable folder, and numbers that do not depend on how
many runs share the machine (issue 22, items 6 and 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dstbench.cli.app import main

GRID = ["--methods", "static,set", "--seeds", "0,1", "--preset", "quick", "--epochs", "2", "--max-train-samples", "128",
        "--max-test-samples", "64", "--batch-size", "32", "--quiet"]  # fmt: skip
LT = ["--sparsity", "0.5", "--epochs", "2", "--max-train-samples", "128", "--max-test-samples", "64", "--batch-size", "32",
      "--quiet"]  # fmt: skip


def _numbers(run: Path) -> list[dict[str, object]]:
    """Every epoch's row without its wall-clock times: what must be bit-identical."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


def _interrupt(args: list[str], when: Path, timeout: float = 240) -> tuple[int, str]:
    """Run ``dstbench ARGS`` in its own process group; once ``when`` exists, SIGINT the whole group
    (as a terminal's Ctrl-C does) and return (exit code, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstbench.cli", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not when.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, f"{when} never appeared"
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_compare_jobs_2_interrupted_and_resumed_equals_jobs_1_bit_for_bit(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # this process's count must not leak into the runs it trains (--threads does)
    try:
        assert main(["compare", *GRID, "--jobs", "1", "--out", str(one)]) == 0
    finally:
        torch.set_num_threads(before)
    code, err = _interrupt(["compare", *GRID, "--jobs", "2", "--out", str(two)], two / "static_s0.9_seed0" / "checkpoint.pt")
    if code != 0:  # the signal arrived before the grid finished (it normally does)
        assert code == 130
        assert err.strip().splitlines() == [
            "dstbench: interrupted by SIGINT; finished runs and epochs are saved: run the same command to continue"
        ]
    assert main(["compare", *GRID, "--jobs", "2", "--out", str(two)]) == 0
    runs = sorted(p.name for p in one.iterdir() if p.is_dir())
    assert len(runs) == 4
    for name in runs:
        assert _numbers(two / name) == _numbers(one / name), name
        assert json.loads((two / name / "config.json").read_text())["run"]["threads"] == 1


def _without_wall_times(text: str) -> str:
    """The printed tables with their wall-clock columns blanked (``epoch (s)``, ``epoch time (x ...)``,
    ``... time (%)``): every other cell of a resumed grid equals the uninterrupted one's."""
    lines, clock_columns = text.splitlines(), set()
    for i, line in enumerate(lines):
        cells = line.split("|")
        if i + 1 < len(lines) and line.startswith("|") and lines[i + 1].startswith("|-"):
            clock_columns = {j for j, cell in enumerate(cells) if "(s)" in cell or "time" in cell}
        elif line.startswith("|") and not line.startswith("|-"):
            lines[i] = "|".join("~" if j in clock_columns else cell for j, cell in enumerate(cells))
    return "\n".join(lines)


def test_lt_interrupted_and_resumed_prints_the_uninterrupted_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["lt", *LT, "--out", str(whole)]) == 0
    expected = _without_wall_times(capsys.readouterr().out.replace(str(whole), "DIR"))
    code, err = _interrupt(["lt", *LT, "--out", str(cut)], cut / "round01" / "checkpoint.pt")
    assert code == 130 and err.strip().splitlines() == [
        "dstbench: interrupted by SIGINT; finished runs and epochs are saved: run the same command to continue"
    ]
    assert main(["lt", *LT, "--out", str(cut)]) == 0
    assert _without_wall_times(capsys.readouterr().out.replace(str(cut), "DIR")) == expected


@pytest.mark.parametrize("command", [["models", "--filter", "resnet*"], ["methods", "--details"]])
def test_a_closed_pipe_is_no_traceback(command: list[str]) -> None:
    """``dstbench models | head``: the reader is gone before the output comes (closed at once here)."""
    proc = subprocess.Popen([sys.executable, "-m", "dstbench.cli", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""
