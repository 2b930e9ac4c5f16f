"""Lottery-ticket pipelines: rounds of iterative magnitude pruning, each an ordinary run folder.

Frankle & Carbin (ICLR 2019) and Frankle et al. (2020, rewinding) find a ticket by training, pruning
the globally smallest weights and rewinding the survivors; iterative pruning removes ``p = 20 %`` of the
remaining weights per round, so round ``r`` has sparsity ``1 - 0.8^r`` and a target ``s`` needs
``R = ceil(log(1 - s) / log(0.8))`` rounds (90 % -> 11, 95 % -> 14, 98 % -> 18); one-shot pruning is
``R = 1``. The pipeline here is::

    DIR/dense     the dense run (``--save-rewind-step k`` keeps theta_k in ``rewind.pt``)
    DIR/round01   method ``lt``: --hp ticket_from=DIR/dense   sparsity 1 - 0.8^1
    DIR/round02   method ``lt``: --hp ticket_from=DIR/round01 sparsity 1 - 0.8^2
    ...           the last round at exactly s

Each round is a resumable run folder: rerunning the command reuses finished rounds and resumes an
interrupted one, but only if it is the requested run (same config and code, :mod:`dstbench.runs.reuse`); a
stale round is refused in one line before anything trains. Every round rewinds to the *root* run's
theta_k, found by following the chain of ``ticket_from`` folders. Its ``summary.json`` charges the whole
pipeline: ``flops.train_flops`` is this round's training plus the ticket's ``train_flops`` (itself the
pipeline up to there), and ``flops.train_flops_run`` keeps this round alone, so ``compare`` and
``report`` tables are honest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.config import TrainConfig, resolve_config
from dstbench.core.errors import ConfigError
from dstbench.runs.atomic import atomic_write_json, atomic_write_text

__all__ = [
    "PRUNE_PER_ROUND",
    "Pipeline",
    "lottery_pipeline",
    "lt_rounds",
    "round_sparsities",
    "run_lottery",
]

PRUNE_PER_ROUND = 0.2
"""Frankle & Carbin's iterative rate: 20 % of the remaining conv/FC weights per round."""
_EPS = 1e-9


def lt_rounds(sparsity: float, per_round: float = PRUNE_PER_ROUND) -> int:
    """Rounds of ``per_round`` pruning needed to reach ``sparsity``: ``ceil(log(1-s) / log(1-p))``."""
    if not 0.0 < per_round < 1.0:
        raise ConfigError(f"the pruning rate per round must be in (0, 1), got {per_round}")
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"a lottery-ticket sparsity must be in (0, 1), got {sparsity}")
    return max(1, math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - per_round) - _EPS))


def round_sparsities(sparsity: float, rounds: int, per_round: float = PRUNE_PER_ROUND) -> list[float]:
    """Sparsity after each round: ``1 - (1-p)^r`` for the first ``rounds - 1``, then exactly ``sparsity``
    (the last round goes to the target; one round is one-shot pruning)."""
    if rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {rounds}")
    steps = [1.0 - (1.0 - per_round) ** r for r in range(1, rounds)]
    if steps and steps[-1] >= sparsity:
        raise ConfigError(
            f"{rounds} rounds of {per_round:g} pruning pass {sparsity:g} before the last round; use --rounds "
            f"{lt_rounds(sparsity, per_round)} or fewer"
        )
    return [*steps, sparsity]


# -- the whole pipeline ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pipeline:
    """The runs of one pipeline by depth: ``levels[0]`` is the dense run, ``levels[r]`` the runs of
    round ``r`` (each starts from a run of level ``r - 1``); ``finals`` maps each target sparsity to
    its last round, the run that stands for the method at that sparsity."""

    levels: list[list[TrainConfig]]
    finals: dict[float, TrainConfig]

    @property
    def configs(self) -> list[TrainConfig]:
        return [cfg for level in self.levels for cfg in level]


def lottery_pipeline(
    targets: Sequence[float],
    *,
    folder: Path,
    rounds: int | None = None,
    per_round: float = PRUNE_PER_ROUND,
    preset: str | None,
    config_file: str | None,
    overrides: Mapping[str, Any],
    hp: Mapping[str, Any],
) -> Pipeline:
    """Every run of a pipeline to one or several target sparsities, resolved (nothing trains).

    Targets share the dense run and the rounds at ``1 - (1-p)^r`` they have in common; each target's
    last round branches off the shared round before it, so a grid at 90, 95 and 98 % trains 1 + 17 + 3
    runs instead of 3 + 11 + 14 + 18. A lone target's last round is ``roundRR``; with several it is
    ``roundRR_sS``. The dense run keeps theta_k for the rounds' ``rewind_step`` (``hp``, default 0)."""
    base = {key: value for key, value in overrides.items() if key not in ("method", "sparsity", "out")}
    steps = {s: round_sparsities(s, rounds or lt_rounds(s, per_round), per_round) for s in dict.fromkeys(targets)}
    deepest = max(len(path) for path in steps.values())

    def lt_round(name: str, sparsity: float, ticket: str) -> TrainConfig:
        fields = {**base, "method": "lt", "sparsity": sparsity, "out": str(folder / name), "save_rewind_step": None}
        return resolve_config(preset, config_file, fields, {**hp, "ticket_from": ticket})

    chain = [str(folder / "dense")]  # chain[r]: the shared round r's folder (chain[0]: the dense run)
    levels: list[list[TrainConfig]] = [[]]
    for r in range(1, deepest):
        levels.append([lt_round(f"round{r:02d}", 1.0 - (1.0 - per_round) ** r, chain[-1])])
        chain.append(levels[-1][0].out)
    levels.append([])
    finals = {}
    for sparsity, path in steps.items():
        name = f"round{len(path):02d}" + ("" if len(steps) == 1 else f"_s{sparsity:g}")
        finals[sparsity] = lt_round(name, sparsity, chain[len(path) - 1])
        levels[len(path)].append(finals[sparsity])
    rewind_step = int(next(iter(finals.values())).hp.get("rewind_step", 0))
    dense = {**base, "method": "dense", "out": chain[0], "save_rewind_step": rewind_step}
    levels[0] = [resolve_config(preset, config_file, dense)]
    return Pipeline(levels, finals)


def run_lottery(
    sparsity: float,
    *,
    rounds: int | None = None,
    per_round: float = PRUNE_PER_ROUND,
    rewind_step: int = 0,
    out: str,
    preset: str | None,
    config_file: str | None,
    overrides: Mapping[str, Any],
    hp: Mapping[str, Any],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train (or reuse, or resume) the dense run and every round; write ``lt.json``/``lt.md`` in ``out``."""
    from dstbench.grid.compare import format_table
    from dstbench.runs.reuse import reusable_summary
    from dstbench.train.loop import train
    from dstbench.train.preflight import preflight

    if preset is None and config_file is None and not {"model", "dataset", "data_dir"} & set(overrides):
        preset = "quick"
    folder = Path(out)
    pipeline = lottery_pipeline(
        [sparsity], folder=folder, rounds=rounds, per_round=per_round, preset=preset, config_file=config_file,
        overrides=overrides, hp={**hp, "rewind_step": rewind_step},
    )  # fmt: skip
    configs = pipeline.configs
    for cfg in configs:
        preflight(cfg)  # every round's own checks (run length included), before the dense run trains
    finished = [reusable_summary(cfg) for cfg in configs]  # a stale round fails before any training
    summaries = []
    for cfg, summary in zip(configs, finished):
        if summary is None:
            summary = train(cfg, resume="auto", progress=progress)
        summary["run_dir"] = cfg.out
        summaries.append(summary)
    atomic_write_json(folder / "lt.json", _rows(summaries))
    atomic_write_text(folder / "lt.md", format_table(summaries) + "\n")
    return summaries


def _rows(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per run of the pipeline: its sparsity, accuracy, own and cumulative training FLOPs."""
    return [
        {
            "run_dir": s["run_dir"],
            "method": s["method"],
            "sparsity": s["realised_sparsity"]["sparsified"],
            "test_acc": s["test_acc"],
            "train_flops_run": s["flops"].get("train_flops_run", s["flops"]["train_flops"]),
            "train_flops_pipeline": s["flops"]["train_flops"],
        }
        for s in summaries
    ]
