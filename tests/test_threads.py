"""``--threads`` is part of a run (issue 22, item 7): recorded in ``config.json``, defaulted for folders
that predate it, and a resume with another count is continued with a warning, never silently."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dstbench.config import TrainConfig
from dstbench.runs.configs import flat_config, typed_config
from dstbench.runs.rundir import RunDir
from dstbench.train.resume import _with_saved_threads


def test_threads_is_recorded_in_the_run_group_and_defaulted_for_old_folders() -> None:
    assert TrainConfig(threads=3).to_json()["run"]["threads"] == 3
    old = {k: v for k, v in flat_config(TrainConfig().to_json()).items() if k != "threads"}  # a 0.2 flat config
    assert typed_config(old)["threads"] == 1


@pytest.mark.parametrize(("saved", "now", "warned"), [(1, 1, False), (1, 4, True), (None, 1, True), (None, 4, True)])
def test_a_resume_with_another_thread_count_warns_and_is_checked_as_the_same_run(
    saved: int | None, now: int, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TrainConfig().to_json()
    if saved is None:
        del config["run"]["threads"]
    with caplog.at_level(logging.WARNING):
        checked = _with_saved_threads(RunDir(tmp_path), config, TrainConfig(threads=now))
    assert checked.threads == (saved or 1)  # what the identity check compares: the run's own count
    assert ("resumes with --threads" in caplog.text) is warned
