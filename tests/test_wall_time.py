"""The steady-state epoch time and its shares, from metrics rows with known numbers."""

from __future__ import annotations

import torch

from dstbench.train.wall_time import STEADY_DEFINITION, device_name, wall_time


def _row(seconds: float, updates: float = 0.0, hooks: float = 0.0) -> dict[str, float]:
    return {"epoch_seconds": seconds, "update_seconds": updates, "step_hook_seconds": hooks}


def test_steady_epoch_is_the_median_after_the_first_and_shares_are_of_those_epochs() -> None:
    rows = [_row(60.0, 1.0, 9.0), _row(3.0, 0.5, 1.0), _row(100.0, 0.0, 2.0), _row(2.0, 0.0, 1.0)]
    got = wall_time(rows, "cpu, 2 threads")
    assert got == {
        "epoch_seconds": 3.0,  # median of 3, 100, 2: the warm-up epoch (60 s) and the slow outlier do not count
        "definition": STEADY_DEFINITION,
        "epochs_measured": 3,
        "warm_up_included": False,
        "update_share": 0.5 / 105.0,
        "step_hook_share": 4.0 / 105.0,
        "device": "cpu, 2 threads",
    }


def test_one_epoch_has_no_steady_state_and_says_so() -> None:
    got = wall_time([_row(8.0, 2.0, 0.0)], "cpu, 1 thread")
    assert (got["epoch_seconds"], got["epochs_measured"], got["warm_up_included"], got["update_share"]) == (8.0, 1, True, 0.25)
    assert wall_time([], "cpu, 1 thread")["epoch_seconds"] is None


def test_device_name_says_threads_or_gpu() -> None:
    assert device_name(torch.device("cpu"), 1) == "cpu, 1 thread"
    assert device_name(torch.device("cpu"), 4) == "cpu, 4 threads"
    if torch.cuda.is_available():
        assert device_name(torch.device("cuda", 0), 1) == torch.cuda.get_device_name(0)
