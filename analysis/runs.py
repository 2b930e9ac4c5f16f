"""Run directories as the analyses read them: config, plan and (once finished) summary.

``report``, ``plot`` and the topology analyses take either one run directory or a folder of them (what
``compare`` and ``sweep`` write), so both are resolved here, with one-line errors for anything else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.core.errors import DstbenchError
from dstbench.runs.configs import read_config, typed_config
from dstbench.runs.reuse import RESUME_IGNORED_FIELDS  # the config's list, through the runs layer
from dstbench.runs.rundir import RunDir

__all__ = ["Run", "Skipped", "load_run", "find_runs", "complete_runs", "report_runs"]
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


# Files a grid or a report writes beside its runs (tables, figures): not runs, never reported as skipped.
_GRID_OUTPUTS = (".json", ".jsonl", ".md", ".csv", ".png", ".pdf", ".svg")


@dataclass(frozen=True)
class Skipped:
    """An entry of a folder of runs that ``report`` did not read, and why."""

    path: Path
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


def _is_output(entry: Path) -> bool:
    """A table or figure beside the runs, or a folder of nothing else (``figures/``): not a run."""
    if entry.is_symlink():
        return False
    if entry.is_file():
        return entry.suffix in _GRID_OUTPUTS
    if not entry.is_dir() or RunDir(entry).config.exists():
        return False
    inside = list(entry.iterdir())
    return bool(inside) and all(path.is_file() and not path.is_symlink() and path.suffix in _GRID_OUTPUTS for path in inside)


def _pipeline_runs(entry: Path) -> list[Path]:
    """The entries of a pipeline folder among the runs (``reproduce``'s ``lt_seed0/``: LT's dense run
    and rounds), which are runs of the grid too; empty for anything else."""
    if entry.is_symlink() or not entry.is_dir() or entry.name.startswith(".") or RunDir(entry).config.exists():
        return []
    inside = sorted(entry.iterdir())
    return inside if any(RunDir(child).config.exists() for child in inside) else []


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` is not a finished run to report, or None when it is one."""
    if path.is_symlink():
        return "a symbolic link, not a run folder"
    if not path.is_dir():
        return "a file, not a run folder"
    config = RunDir(path).config
    if config.is_symlink():
        return "its config.json is a symbolic link"
    if not config.exists():
        return "no config.json: not a run (empty or never started)"
    if not RunDir(path).summary.exists():
        return "not finished (no summary.json)"
    return None


def _identity(run: Run) -> str:
    """What makes two folders one run: the typed config less what cannot change the numbers (the
    folder's path, device, workers): a copy (``rigl_s0.9_seed0.bak``) has the identity of its original."""
    config = {k: v for k, v in typed_config(run.config).items() if k not in RESUME_IGNORED_FIELDS}
    return json.dumps(config, sort_keys=True, default=str)


def report_runs(folder: str | Path, *, skip_incomplete: bool = False) -> tuple[list[Run], list[Skipped]]:
    """The finished runs of ``folder`` (a run, or a folder of runs one level down, pipeline folders
    among them read one level further) and every entry
    skipped with its reason. Nothing is dropped silently: an entry that is not a finished run is an
    error unless ``skip_incomplete`` (then it is returned in the skipped list), and two folders of one
    run (a ``.bak`` copy) are always an error, since they would count one seed twice."""
    path = Path(folder)
    if not path.is_dir():
        raise DstbenchError(f"{path}: no such directory")
    top = RunDir(path).config
    entries = [path] if top.exists() or top.is_symlink() else sorted(path.iterdir())
    entries = [inner for entry in entries for inner in (_pipeline_runs(entry) or [entry])]
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for entry in entries:
        if entry.name.startswith(".") or _is_output(entry):
            continue  # hidden folders (.submitit) and the grid's own tables and figures
        problem = _entry_problem(entry)
        if problem is None:
            try:
                runs.append(load_run(entry))
                continue
            except (DstbenchError, OSError) as exc:
                problem = f"unreadable: {exc}"
        if not skip_incomplete:
            raise DstbenchError(f"{entry} is not a finished run ({problem}); pass --skip-incomplete to report the rest")
        skipped.append(Skipped(entry, problem))
    _refuse_duplicates(runs)
    if not runs:
        what = "no finished runs" if skipped else "neither a run directory nor a folder of runs (no config.json)"
        raise DstbenchError(f"{path}: {what}")
    return runs, skipped


def _refuse_duplicates(runs: Sequence[Run]) -> None:
    seen: dict[str, Path] = {}
    for run in runs:
        first = seen.setdefault(_identity(run), run.path)
        if first != run.path:
            raise DstbenchError(
                f"{run.path} and {first} are the same run ({run.method}, sparsity {run.sparsity:g}, seed {run.seed}, "
                "same config): a copy would count one seed twice; move one out of the folder"
            )
