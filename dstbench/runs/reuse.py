"""Is an existing run the run being asked for? One check for ``--resume``, ``compare``, ``sweep`` and ``lt``.

A folder is only continued or reused when its resolved config (hyper-parameters included) and the code
version that wrote it match the request; the first difference is reported as one line naming the field.
Fields in ``RESUME_IGNORED_FIELDS`` (device, workers, ...) do not change the numbers and may differ.
Runs from before code versions were recorded are accepted with a warning (they cannot be checked).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dstbench.config import RESUME_IGNORED_FIELDS, TrainConfig
from dstbench.core.errors import CheckpointError
from dstbench.runs.configs import typed_config
from dstbench.runs.integrity import code_version
from dstbench.runs.lock import run_lock
from dstbench.runs.rundir import RunDir

__all__ = ["Mismatch", "find_mismatch", "check_same_run", "reusable_summary"]
log = logging.getLogger(__name__)


class Mismatch(CheckpointError):
    """An existing run differs from the request (a config field or the code version)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def find_mismatch(
    saved_config: Mapping[str, Any], saved_version: Mapping[str, Any] | None, cfg: TrainConfig
) -> tuple[str, Any, Any] | None:
    """(field, saved value, requested value) of the first difference, or None.

    Both sides are typed first (:func:`dstbench.runs.configs.typed_config`), so a folder written by
    0.1/0.2 (flat, hyper-parameters as strings) matches the same request made today."""
    current = typed_config(cfg.to_json())
    saved = typed_config(saved_config)
    for key in sorted(current):
        if key not in RESUME_IGNORED_FIELDS and saved.get(key) != current[key]:
            return key, saved.get(key), current[key]
    if saved_version is not None:
        now = code_version()
        for key in ("package", "commit"):
            if saved_version.get(key) != now.get(key):
                return f"code version ({key})", saved_version.get(key), now.get(key)
    return None


def check_same_run(
    run_path: Path,
    saved_config: Mapping[str, Any],
    saved_version: Mapping[str, Any] | None,
    cfg: TrainConfig,
    *,
    resume: bool,
) -> None:
    """Raise :class:`Mismatch` (one line, with the way out) unless the run is the requested one."""
    if saved_version is None:
        log.warning("%s records no code version (written before they were recorded): reusing it unverified", run_path)
    found = find_mismatch(saved_config, saved_version, cfg)
    if found is None:
        return
    key, was, now = found
    if resume:
        if key.startswith("code version"):
            raise Mismatch(
                f"--resume with different code: {key} was {was!r}, now {now!r} ({run_path}); resume with the code "
                f"that started it, or set DSTBENCH_CODE_VERSION={was} if the change cannot affect the numbers",
                key,
            )
        raise Mismatch(f"--resume with a different config: {key} was {was!r}, now {now!r} ({run_path})", key)
    raise Mismatch(
        f"{run_path} was made with a different {'code version' if key.startswith('code') else 'config'}: "
        f"{key} was {was!r}, now {now!r}; use another --out, or --rerun-mismatched to retrain it",
        key,
    )


def reusable_summary(cfg: TrainConfig, rerun_mismatched: bool = False) -> dict[str, Any] | None:
    """The summary of the finished run in ``cfg.out`` if it is the requested run; None to (re)train.

    A different config or code version is one error line, or, with ``rerun_mismatched``, the old run
    is deleted so that it is trained again from scratch.
    """
    run = RunDir(cfg.out)
    if not run.path.is_dir():
        return None
    with run_lock(run.path, "reusing it"):  # not a folder another process is writing (or deleting it under it)
        return _reusable(run, cfg, rerun_mismatched)


def _reusable(run: RunDir, cfg: TrainConfig, rerun_mismatched: bool) -> dict[str, Any] | None:
    try:
        if run.is_complete():
            summary: dict[str, Any] = run.read_json(run.summary)
            check_same_run(run.path, run.read_json(run.config), summary.get("code_version"), cfg, resume=False)
            return summary
        if run.checkpoint.exists():
            state = run.load_checkpoint("cpu")
            saved = state.get("config") or run.read_json(run.config)
            check_same_run(run.path, saved, state.get("code_version"), cfg, resume=False)
        return None
    except Mismatch:
        if not rerun_mismatched:
            raise
        log.warning("%s was made with other settings: retraining it (--rerun-mismatched)", run.path)
        shutil.rmtree(run.path)
        return None
