"""The runs of one part of a ``reproduce`` target (one distribution, the dense runs, or the sweep):
its grid cells, and LT through its whole pipeline.

LT (Lottery Ticket with rewinding) cannot be one cell of a grid: a round needs the finished run
before it (``--hp ticket_from``). Its cells are therefore pipelines (:func:`~dstbench.grid.lottery.lottery_pipeline`),
one per seed in ``PART/lt_seedN/``: the dense run, the pruning rounds the part's sparsities share, and
each sparsity's last round, which is the cell's result (its ``flops.train_flops`` charges the whole
pipeline up to it). The rounds train level by level, every seed's round ``r`` together, through the
grid's executor (``--jobs``, ``--launcher``), so finished rounds are reused and interrupted ones
resumed like any cell.

Planning resolves and checks every run (:func:`dstbench.train.preflight.preflight`) and builds no
folder; ``reproduce`` plans every part before the first run of any part trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.config import TrainConfig
from dstbench.grid.compare import finish_grid, grid_configs, method_hp
from dstbench.grid.execution import Execution
from dstbench.grid.launch import execute
from dstbench.grid.lottery import Pipeline, lottery_pipeline
from dstbench.train.preflight import preflight

__all__ = ["PartRuns", "plan_part", "run_part"]

LT = "lt"


@dataclass(frozen=True)
class PartRuns:
    """A part's folder, methods and sparsities, its grid cells and its LT pipelines (one per seed)."""

    folder: Path
    methods: list[str]
    sparsities: tuple[float, ...]
    cells: list[TrainConfig]
    pipelines: list[Pipeline]

    @property
    def configs(self) -> list[TrainConfig]:
        """Every run the part trains, LT's dense runs and rounds included."""
        return [*self.cells, *(cfg for pipeline in self.pipelines for cfg in pipeline.configs)]


def plan_part(
    folder: Path,
    methods: Sequence[str],
    sparsities: Sequence[float],
    *,
    preset: str,
    overrides: Mapping[str, Any],
    hp: Mapping[str, Any],
    seeds: Sequence[int],
    lt_per_round: float,
) -> PartRuns:
    """Every run of the part, resolved and checked; nothing is written. ``hp`` holds the whole
    target's assignments (checked against all its methods by the caller): ``method.name`` entries
    for methods of other parts are left out here."""
    others = [m for m in methods if m != LT]
    grid_hp = {key: value for key, value in hp.items() if key.partition(".")[0] in others or "." not in key}
    cells = grid_configs(
        others, sparsities=sparsities, seeds=seeds, out=str(folder), preset=preset, config_file=None,
        overrides=overrides, hp=grid_hp,
    )  # fmt: skip
    pipelines = []
    if LT in methods:
        for seed in seeds:
            pipeline = lottery_pipeline(
                sparsities, folder=folder / f"{LT}_seed{seed}", per_round=lt_per_round, preset=preset,
                config_file=None, overrides={**overrides, "seed": seed}, hp=method_hp(hp, LT),
            )  # fmt: skip
            for cfg in pipeline.configs:
                preflight(cfg)
            pipelines.append(pipeline)
    return PartRuns(folder, list(methods), tuple(sparsities), cells, pipelines)


def run_part(
    part: PartRuns, *, sweep: bool, execution: Execution | None, progress: bool
) -> list[dict[str, Any]]:
    """Train (or reuse, or resume) the part; write its ``compare`` (or ``sweep``) files; return one
    summary per cell, LT's last rounds standing for LT."""
    from dstbench.grid.sweep import write_sweep

    done = dict(zip((cfg.out for cfg in part.cells), execute(part.cells, execution, progress=progress)))
    depth = max((len(pipeline.levels) for pipeline in part.pipelines), default=0)
    for level in range(depth):
        runs = [cfg for pipeline in part.pipelines if level < len(pipeline.levels) for cfg in pipeline.levels[level]]
        done.update(zip((cfg.out for cfg in runs), execute(runs, execution, progress=progress)))
    lt_cells = [cfg for pipeline in part.pipelines for cfg in pipeline.finals.values()]
    configs = [*part.cells, *lt_cells]
    summaries = finish_grid(configs, [done[cfg.out] for cfg in configs], part.folder)
    if sweep:
        write_sweep(part.folder, part.methods, part.sparsities, summaries)
    return summaries
