"""``dstbench reproduce``: one command per experiment of the BiDST paper, at four scales.

Targets (all on CIFAR; ``--dataset cifar100`` for CIFAR-100):

* ``table1``: Table 1, ResNet-32: every built-in method × {uniform, ERK} × {90, 95, 98 %}, plus dense
  training once per seed (the reference for the gaps to dense); installed plugins join only when
  named in ``--methods`` or ``--extra-methods``; LT runs through its pipeline of pruning rounds
  (:mod:`dstbench.grid.reproduce_runs`);
* ``table-b1``: Table B.1, the same grid on VGG-19;
* ``figure4``: Figure 4, mask IoU (masks one epoch apart) over training at 90 % (ERK), every sparse
  method, every seed; writes ``figure4.png``;
* ``figure3``: Figure 3, extreme sparsity (90 % to 99.9999 %), every sparse method, ResNet-32 panel;
  writes ``figure3.png``.

Scales:

* ``micro``: every part of a target in seconds a run: synthetic data (112 training images), 28 steps,
  seed 0, the highest sparsity of each part, LT pruning 90 % a round; the tests run it for every target.
* ``smoke``: the pipeline end to end in minutes on a laptop CPU: synthetic data (1024 training and
  256 test images), the ``tiny_cnn`` of the ``quick`` preset for every target, 3 epochs, seeds 0 and 1,
  LT pruning 50 % a round (4 to 6 rounds instead of 11 to 18).
  Its numbers say nothing about the methods; it checks that every part runs and reports.
* ``short``: real CIFAR (``--data-dir``), the target's Table A.1 recipe (``cifar-resnet32`` or
  ``cifar-vgg19`` preset) cut to 10 epochs, seeds 0 and 1. The cosine schedule is compressed to the
  10 epochs; the methods' own update cadences (e.g. BiDST every 8 epochs) are the paper's.
* ``paper``: the Table A.1 recipe as is (158 epochs for every method, as the preset), seeds 0, 1, 2.

Every run of every part is resolved and checked before the first one trains; then each goes through
``compare``'s executor into ``OUT/<part>/<run>``, so a re-issued command reuses finished runs and
resumes interrupted ones. Each part (one distribution, or dense) has its own
folder because run folders are named by method, sparsity and seed only. At the end the report of
``dstbench report --paper`` is written to ``OUT/report.md`` (and ``report.csv``) and returned, with
``rigl`` as the baseline where it ran.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstbench.core.errors import ConfigError
from dstbench.grid.execution import Execution
from dstbench.grid.lottery import PRUNE_PER_ROUND
from dstbench.runs.atomic import atomic_write_text

__all__ = ["TARGETS", "SCALES", "Scale", "Target", "reproduce"]
log = logging.getLogger(__name__)

TABLE_SPARSITIES = (0.9, 0.95, 0.98)


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is: a preset (None: the target's own), option overrides and seeds.

    ``lt_per_round`` is the share of weights LT prunes per round (Frankle & Carbin's 20 % at the
    real scales); ``top_sparsities`` keeps only the highest N sparsities of each part (None: all)."""

    description: str
    preset: str | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1)
    real_data: bool = True
    lt_per_round: float = PRUNE_PER_ROUND
    top_sparsities: int | None = None


SCALES: dict[str, Scale] = {
    "micro": Scale(
        "synthetic data, tiny_cnn, 2 epochs of 14 steps of 8 images, seed 0, the highest sparsity of each part, LT pruning "
        "90 % per round (seconds a run; what the tests run for every target)",
        "quick",
        {"epochs": 2, "synthetic_train_samples": 112, "synthetic_test_samples": 32, "batch_size": 8},
        seeds=(0,),
        real_data=False,
        lt_per_round=0.9,
        top_sparsities=1,
    ),
    "smoke": Scale(
        "synthetic data, tiny_cnn, 3 epochs, seeds 0 and 1, LT pruning 50 % per round (minutes on a CPU; checks "
        "the pipeline only)",
        "quick",
        {"epochs": 3, "synthetic_train_samples": 1024, "synthetic_test_samples": 256},
        real_data=False,
        lt_per_round=0.5,
    ),
    "short": Scale("real CIFAR, the Table A.1 recipe cut to 10 epochs, seeds 0 and 1", None, {"epochs": 10}),
    "paper": Scale("real CIFAR, the Table A.1 recipe (158 epochs), seeds 0, 1 and 2", None, {}, seeds=(0, 1, 2)),
}


@dataclass(frozen=True)
class Target:
    """One experiment of the paper: its recipe (preset) and what it trains."""

    description: str
    preset: str
    kind: str  # "table", "iou" or "extreme"


TARGETS: dict[str, Target] = {
    "table1": Target("Table 1: ResNet-32, uniform and ERK, 90/95/98 %", "cifar-resnet32", "table"),
    "table-b1": Target("Table B.1: VGG-19, uniform and ERK, 90/95/98 %", "cifar-vgg19", "table"),
    "figure4": Target("Figure 4: mask IoU over training, ResNet-32 at 90 % ERK", "cifar-resnet32", "iou"),
    "figure3": Target("Figure 3: extreme sparsity 90 % .. 99.9999 %, ResNet-32", "cifar-resnet32", "extreme"),
}


def _methods(chosen: Sequence[str] | None, extra: Sequence[str] | None = None) -> tuple[list[str], bool]:
    """(sparse methods, whether dense runs): the built-in methods unless ``chosen`` names some, then
    ``extra`` (``--extra-methods``) added to them.

    A target's grid is the paper's methods: a plugin installed through the entry point joins only
    when named, so installing one never changes (or breaks) what ``reproduce table1`` runs."""
    from dstbench.core.registry import get_method, list_methods

    builtin = [name for name in list_methods() if get_method(name).__module__.startswith("dstbench.methods.")]
    names = list(dict.fromkeys([*(chosen or builtin), *(extra or [])]))
    for name in names:
        get_method(name)  # a typo fails before any training
    return [n for n in names if n != "dense"], "dense" in names


Part = tuple[str, list[str], tuple[float, ...], dict[str, Any]]


def _parts(target: Target, sparse: list[str], dense: bool, top: int | None = None) -> list[Part]:
    """(sub-folder, methods, sparsities, option overrides) for each grid the target runs; ``top``: keep
    only the highest ``top`` sparsities of each."""
    from dstbench.grid.sweep import DEFAULT_SPARSITIES

    parts: list[Part]
    if target.kind == "table":
        parts = [(d, sparse, TABLE_SPARSITIES, {"distribution": d}) for d in ("uniform", "erk")]
    elif target.kind == "iou":
        parts = [("erk", sparse, (0.9,), {"distribution": "erk"})]
    else:
        parts = [("sweep", sparse, tuple(DEFAULT_SPARSITIES), {})]
    if top is not None:
        parts = [(sub, names, sparsities[-top:], options) for sub, names, sparsities, options in parts]
    if dense and target.kind == "table":
        parts.append(("dense", ["dense"], (0.9,), {}))  # dense ignores sparsity: one run per seed
    return [part for part in parts if part[1]]


def _check_request(target_name: str, scale_name: str, dataset: str | None) -> tuple[Target, Scale]:
    """The target and scale named, or one line saying what exists (before anything trains)."""
    if target_name not in TARGETS:
        raise ConfigError(f"unknown target {target_name!r}; choose from {', '.join(TARGETS)}")
    if scale_name not in SCALES:
        raise ConfigError(f"unknown scale {scale_name!r}; choose from {', '.join(SCALES)}")
    if dataset not in (None, "cifar10", "cifar100"):
        raise ConfigError(f"--dataset must be cifar10 or cifar100, got {dataset!r}")
    return TARGETS[target_name], SCALES[scale_name]


def reproduce(
    target_name: str,
    scale_name: str,
    *,
    dataset: str | None = None,
    out: str | None = None,
    methods: Sequence[str] | None = None,
    extra_methods: Sequence[str] | None = None,
    baseline: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    hp: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    execution: Execution | None = None,
    rerun_mismatched: bool = False,
) -> str:
    """Run (or resume) one target at one scale into ``out`` and return its report (Markdown).

    Every cell of every part is resolved and checked (:func:`dstbench.train.preflight.preflight`)
    before the first run trains. ``baseline`` is the method the report tests every other against
    (default: ``rigl`` where it ran)."""
    from dstbench.analysis.report import report_rows
    from dstbench.analysis.tables import csv_table, format_tables
    from dstbench.grid.compare import check_grid, check_hp_owners
    from dstbench.grid.reproduce_runs import plan_part, run_part

    target, scale = _check_request(target_name, scale_name, dataset)
    sparse, dense = _methods(methods, extra_methods)
    if baseline is not None and baseline not in sparse + ["dense"] * dense:
        raise ConfigError(f"--baseline {baseline!r} is not among --methods ({', '.join(sparse + ['dense'] * dense)})")
    check_hp_owners(sparse + ["dense"] * dense, hp or {})
    folder = Path(out or f"runs/reproduce/{target_name}-{scale_name}-{dataset or 'cifar10'}")
    options: dict[str, Any] = {**scale.overrides, **(overrides or {})}
    if scale.real_data:
        options["dataset"] = dataset or options.get("dataset", "cifar10")
    elif dataset is not None:
        log.warning("the %s scale trains on synthetic data; --dataset %s applies to short and paper", scale_name, dataset)
    plans = [
        plan_part(folder / sub, names, sparsities, preset=scale.preset or target.preset, overrides={**options, **part_options},
                  hp=dict(hp or {}), seeds=list(seeds or scale.seeds), lt_per_round=scale.lt_per_round)
        for sub, names, sparsities, part_options in _parts(target, sparse, dense, scale.top_sparsities)
    ]  # fmt: skip
    check_grid([cfg for plan in plans for cfg in plan.configs], rerun_mismatched)
    summaries = []
    for plan in plans:
        summaries += run_part(plan, sweep=target.kind == "extreme", execution=execution, progress=progress)

    baseline = baseline or ("rigl" if "rigl" in sparse else None)
    rows = report_rows(summaries, baseline=baseline, paper=True)
    title = f"dstbench reproduce {target_name} --scale {scale_name}: {target.description}; {scale.description}"
    text = format_tables(rows, paper=True, title=title)
    text += _figure(target, folder, summaries)
    atomic_write_text(folder / "report.md", text)
    atomic_write_text(folder / "report.csv", csv_table(rows))
    return text


def _figure(target: Target, folder: Path, summaries: Sequence[Mapping[str, Any]]) -> str:
    """Draw the target's figure (Figures 3 and 4) and return a line for the report naming it."""
    if target.kind == "iou":
        from dstbench.analysis.plots import plot_iou
        from dstbench.analysis.runs import load_run

        runs = [load_run(s["run_dir"]) for s in summaries]  # every seed: the legend gives n
        paths = plot_iou(runs, folder / "figure4.png")  # masks a fixed interval apart, as the paper's figure
    elif target.kind == "extreme":
        from dstbench.analysis.plots import plot_sparsity_curve
        from dstbench.grid.sweep import load_sweep

        paths = plot_sparsity_curve(load_sweep(folder / "sweep"), folder / "figure3.png")
    else:
        return ""
    return "\nFigure: " + ", ".join(map(str, paths)) + "\n"
