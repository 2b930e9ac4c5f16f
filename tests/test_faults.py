"""Randomised fault tests: kills at random times and at file writes, random damage to run files.

A handful of seeded cases run in CI; ``DSTBENCH_FAULT_TRIALS=N`` runs N of each kind (and
``benchmarks/fault_injection.py`` runs them all and prints the counts). See ``tests/fault_trials.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import fault_attacks as fa
from tests import fault_trials as ft

TRIALS = int(os.environ.get("DSTBENCH_FAULT_TRIALS", "3"))
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kill trials fork a child process")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def reference(work: Path) -> Path:
    return ft.reference_run(work)


@pytest.fixture(scope="module")
def writes(work: Path, reference: Path) -> dict[str, int]:
    return ft.count_write_events(work)


def test_a_run_repeats_bit_identically(work: Path, reference: Path) -> None:
    """The premise of the kill trials: two uninterrupted runs agree exactly (timings aside)."""
    again = work / "again"
    code, _, err = ft.run_main([*ft.ARGS, "--out", str(again)])
    assert code == 0, err
    assert ft.fingerprint(again) == ft.fingerprint(reference)


@pytest.mark.parametrize("case", range(TRIALS))
def test_kill_at_a_file_write_resumes_bit_identically(
    work: Path, reference: Path, writes: dict[str, int], case: int
) -> None:
    rng = random.Random(1000 + case)
    stage = ft.STAGES[case % len(ft.STAGES)]
    nth = rng.randint(1, writes[stage])
    trial = ft.kill_trial(reference, work, stage=stage, nth=nth)
    assert trial.problem == "", trial.problem
    assert trial.killed and trial.identical


@pytest.mark.parametrize("case", range(TRIALS))
def test_kill_at_a_random_time_resumes_bit_identically(work: Path, reference: Path, case: int) -> None:
    rng = random.Random(2000 + case)
    signum = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)[case % 3]
    trial = ft.kill_trial(reference, work, after=rng.uniform(0.0, 3.0), signum=signum)
    assert trial.problem == "", trial.problem
    assert trial.identical


@pytest.fixture(scope="module")
def expected(work: Path, reference: Path) -> dict[str, Any]:
    return ft.expected_outputs(reference, work)


@pytest.mark.parametrize("case", range(TRIALS * 2))
def test_damaged_run_files_are_refused_in_one_line_or_repaired(
    work: Path, reference: Path, expected: dict[str, Any], case: int
) -> None:
    trial = ft.damage_trial(reference, work, expected, random.Random(3000 + case))
    assert trial.problem == "", trial.problem
    assert set(trial.outcomes) == set(ft.COMMANDS)


def _loading_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtorch" in maps.read()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps for torch loading")
@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_sigint_during_start_up_is_one_line(tmp_path: Path, delay: float) -> None:
    """Ctrl-C while torch is still loading: no traceback, exit 130 (the handler is installed first).

    (A signal during the interpreter's own start-up, before any dstbench code runs, is Python's.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstbench.cli", *ft.ARGS, "--out", str(tmp_path / "r")], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not _loading_torch(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if proc.returncode != 0:  # (a very fast machine may have finished)
        assert proc.returncode == 130
        assert err.strip().splitlines()[-1].startswith("dstbench: interrupted by SIGINT")


# -- attacks beyond damage (issue 22): another run's files, special files, concurrent writers -------------
@pytest.fixture(scope="module")
def other(work: Path, reference: Path) -> Path:
    return fa.other_run(work)


@pytest.mark.parametrize("case", range(TRIALS * 2))
def test_files_of_another_run_are_refused_in_one_line_or_unused(
    work: Path, reference: Path, other: Path, expected: dict[str, Any], case: int
) -> None:
    trial = fa.swap_trial(reference, other, work, expected, random.Random(4000 + case))
    assert trial.problem == "", trial.problem
    assert set(trial.outcomes) == set(ft.COMMANDS)


@pytest.mark.parametrize("case", range(TRIALS))
def test_special_files_are_refused_in_one_line_without_hanging(
    work: Path, reference: Path, expected: dict[str, Any], case: int
) -> None:
    trial = fa.special_trial(reference, work, expected, random.Random(5000 + case))
    assert trial.problem == "", trial.problem


@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_of_two_writers_on_one_folder_one_finishes_and_one_is_refused(
    work: Path, reference: Path, other: Path, delay: float
) -> None:
    trial = fa.writer_trial(reference, other, work, delay)
    assert trial.problem == "", trial.problem


def test_numpy_is_imported_before_torch_can_swallow_a_ctrl_c(tmp_path: Path) -> None:
    """torch's C extension imports numpy and clears any error, a KeyboardInterrupt included: numpy must be
    loaded by dstbench itself (where Ctrl-C propagates), not nested inside torch._C's import."""
    argv = [*ft.ARGS, "--epochs", "1", "--out", str(tmp_path / "r")]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "dstbench.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    depth: dict[str, int] = {}  # module -> nesting depth in the import stack (importtime indents by two spaces a level)
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and not line.rstrip().endswith("| imported package"):
            name = line.rsplit("|", 1)[-1]
            depth.setdefault(name.strip(), len(name) - len(name.lstrip()))
    assert depth["numpy"] <= depth["torch._C"]
