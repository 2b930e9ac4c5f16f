"""Run directories as the analyses read them: config, plan and (once finished) summary.

``report``, ``plot`` and the topology analyses take either one run directory or a folder of them (what
``compare`` and ``sweep`` write), so both are resolved here, with one-line errors for anything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.core.errors import DstbenchError
from dstbench.runs.configs import read_config
from dstbench.runs.rundir import RunDir

__all__ = ["Run", "load_run", "find_runs", "complete_runs"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One run directory's metadata; masks and records are read on demand from ``dir``. ``config`` is
    flat (``{field: value}``) whichever version wrote the folder."""

    dir: RunDir
    config: dict[str, Any]
    plan: dict[str, Any]
    summary: dict[str, Any] | None

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def sparsity(self) -> float:
        return float(self.config["sparsity"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def epochs(self) -> int:
        return int(self.config["epochs"])

    @property
    def steps_per_epoch(self) -> int:
        """From the summary, or for an unfinished run from its metrics (``step`` counts steps done)."""
        if self.summary is not None:
            return int(self.summary["steps_per_epoch"])
        rows = self.dir.read_jsonl(self.dir.metrics)
        if not rows:
            raise DstbenchError(f"{self.path} has not finished an epoch yet (empty {self.dir.metrics.name})")
        return int(rows[0]["step"]) // int(rows[0]["epoch"])

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def sparsified_layers(self) -> list[str]:
        """Layers the method decides for; dense-profile layers are left out of IoU and ITOP."""
        return [layer["name"] for layer in self.plan["layers"] if layer["sparsified"]]

    @property
    def numel(self) -> dict[str, int]:
        return {layer["name"]: int(layer["numel"]) for layer in self.plan["layers"]}


def load_run(path: str | Path) -> Run:
    run = RunDir(path)
    if not run.path.is_dir():
        raise DstbenchError(f"{run.path}: no such run directory")
    summary = run.optional_json(run.summary)
    return Run(run, read_config(run), run.read_json(run.plan), summary)


def find_runs(*folders: str | Path) -> list[Run]:
    """Each argument is a run directory or a folder of runs (one level down, sorted by name)."""
    runs: list[Run] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise DstbenchError(f"{path}: no such directory")
        if RunDir(path).config.exists():
            runs.append(load_run(path))
            continue
        below = [load_run(child) for child in sorted(path.iterdir()) if RunDir(child).config.exists()]
        if not below:
            raise DstbenchError(f"{path} is neither a run directory nor a folder of runs (no config.json)")
        runs.extend(below)
    return runs


def complete_runs(*folders: str | Path) -> list[Run]:
    """:func:`find_runs`, keeping finished runs only (an unfinished one is logged and skipped)."""
    runs = find_runs(*folders)
    for run in runs:
        if run.summary is None:
            log.warning("skipping %s: not finished (no summary.json)", run.path)
    finished = [run for run in runs if run.summary is not None]
    if not finished:
        raise DstbenchError(f"no finished runs in {', '.join(map(str, folders))} (no summary.json)")
    return finished
