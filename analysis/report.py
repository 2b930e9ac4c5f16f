"""Tables shaped like BiDST Tables 1 and 2, from finished runs: Markdown to read, CSV to post-process.

One row (a *cell*) per setting: everything that defines a run except its seed. That is the method and
its resolved hyper-parameters, the sparsity, and every training option in the run's ``config.json``
(model, dataset, epochs, distribution, dense-layer profile, learning rate, subset sizes, ...), less the
options that cannot change the numbers (device, workers, paths). Runs are grouped by *all* of it, so
nothing is merged or dropped; the tables show every setting that differs between rows:

* model, dataset, epochs, distribution (with its dense-layer profile) and sparsity always;
* the method's non-default hyper-parameters in its label, e.g. ``rigl (delta_t=20)``, and its mask
  structure unless unstructured, e.g. ``sr-ste [nm:2:4]``;
* any other option that differs between rows in an ``other settings`` column.

Per cell: n seeds, test accuracy mean ± std and its 95 % Student-t interval, and against a baseline
method (default: the first method listed) the difference of means, its 95 % Welch interval, Welch's
p-value, a verdict in words and the smallest difference these seeds could detect
(:mod:`.stats` says which test and why). ``paper=True`` adds the BiDST paper's published number for
every cell that has one (:mod:`.paper`), as gaps to dense training.

The cost table (Table 2's columns): training FLOPs, absolute and relative to dense training of the same
model (3·f_D·N·E); beside them what a user pays in wall time, the steady-state epoch
(:mod:`dstbench.train.wall_time`) relative to the ``static`` and ``dense`` cells of the same runs, on the
device named; inference FLOPs, mask updates, the share of training time spent in mask updates, and
separately inside the method's per-step hooks (BiDST learns its scores every step: that is training
time, not update time; and only the time inside the hooks, not all the method costs), and the ITOP
rate R_s.

This module computes the rows; :mod:`.tables` formats them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.runs.atomic import atomic_write_text
from dstbench.runs.configs import flat_config

from dstbench.analysis.runs import Run, Skipped, report_runs
from dstbench.analysis.speed import speed_rows, speed_table
from dstbench.analysis.stats import ACCURACY_BOUNDS, DIFFERENCE_BOUNDS, describe, welch
from dstbench.analysis.tables import SHOWN, csv_table, format_tables, format_value

__all__ = ["report_rows", "run_summaries", "write_report"]

Summary = Mapping[str, Any]

# Options that never change a run's numbers (or are reported elsewhere): not part of a cell's setting.
# ``save_rewind_step`` only keeps a copy of the weights at that step (LT's dense run), so it is not a setting.
_NOT_SETTINGS = frozenset(
    {"seed", "out", "device", "num_workers", "eval_batch_size", "data_dir", "loader", "beton_dir", "hp", "method", "sparsity",
     "logger", "save_rewind_step"}
)
# Dense training ignores how sparsity would be distributed.
_DENSE_IGNORES = frozenset({"distribution", "dense_layers", "min_active", "structure"})


def _ignores_sparsity(summary: Summary) -> bool:
    """Dense training ignores the configured sparsity and its distribution; ``small-dense`` does not
    (they set how narrow its network is), so its cells stay apart by sparsity."""
    from dstbench.core.errors import DstbenchError
    from dstbench.core.registry import get_method

    if summary.get("needs", {}).get("sparse", True):
        return False
    try:
        return not get_method(str(summary["method"])).narrows_model
    except DstbenchError:
        return True


def _sparsity(summary: Summary) -> float:
    """The nominal sparsity, except 0 for dense training (which ignores the configured value)."""
    return 0.0 if _ignores_sparsity(summary) else float(summary["sparsity"])


def _settings(summary: Summary) -> dict[str, Any]:
    """The options that define a run (its config.json where known, else the summary's own fields).

    A config.json written before an option existed gets that option's default, which is what the run
    did: otherwise it would sit in a cell of its own beside new runs of the same setting."""
    from dstbench.config import TrainConfig

    if summary.get("config"):
        config = {**flat_config(TrainConfig().to_json()), **flat_config(summary["config"])}
    else:
        config = {key: summary.get(key) for key in SHOWN}
    dense_only = _DENSE_IGNORES if _ignores_sparsity(summary) else frozenset()
    return {k: v for k, v in sorted(config.items()) if k not in _NOT_SETTINGS and k not in dense_only}


def _hyperparameters(summary: Summary) -> dict[str, Any]:
    """The run's hyper-parameters (JSON-normalised) without the run folders its method takes as inputs
    (``MaskUpdater.inputs``): LT's ``ticket_from`` differs for every seed of one cell."""
    from dstbench.core.errors import DstbenchError
    from dstbench.core.registry import get_method

    try:
        inputs: tuple[str, ...] = get_method(summary["method"]).inputs
    except DstbenchError:
        inputs = ()
    hps: dict[str, Any] = json.loads(json.dumps(summary.get("hyperparameters", {}), default=str))
    return {key: value for key, value in hps.items() if key not in inputs}


def _key(summary: Summary) -> tuple[Any, ...]:
    hps = json.dumps(_hyperparameters(summary), sort_keys=True)
    return (summary["method"], _sparsity(summary), hps, json.dumps(_settings(summary), sort_keys=True, default=str))


def _default_hyperparameters(method: str, budget: str) -> dict[str, Any] | None:
    """The registered class's defaults at ``budget`` (cadences scaled, JSON-normalised), or None for a
    method no longer installed."""
    from dstbench.core.budget import budget_defaults
    from dstbench.core.errors import DstbenchError
    from dstbench.core.registry import get_method

    try:
        cls = get_method(method)
    except DstbenchError:
        return None
    normalised: dict[str, Any] = json.loads(json.dumps(budget_defaults(cls, budget), default=str))
    return normalised


def _label(method: str, hps: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]], budget: str = "1x") -> str:
    """``method (budget, name=value, ...)``: the budget unless 1x (``rigl (2x)``), then the hyper-parameters
    that differ from the method's defaults at that budget (or, for a method that is no longer
    registered, those that differ between its cells)."""
    defaults = _default_hyperparameters(method, budget)
    if defaults is not None:
        shown = sorted(k for k in hps if k in defaults and hps[k] != defaults[k])
    else:
        shown = sorted(k for k in hps if any(other.get(k) != hps[k] for other in siblings))
    parts = ([budget] if budget != "1x" else []) + [f"{k}={format_value(hps[k])}" for k in shown]
    return f"{method} ({', '.join(parts)})" if parts else method


def _structured(label: str, structure: str) -> str:
    """A method's label with its mask structure when it has one: ``rigl [nm:2:4]``."""
    return label if structure == "unstructured" else f"{label} [{structure}]"


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the known values; None when no run has the number (e.g. runs older than FLOP logging)."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _flops(summary: Summary, key: str) -> float | None:
    flops = summary.get("flops") or {}
    value = flops.get(key)
    return None if value is None else float(value)


def _hook_share(summary: Summary) -> float | None:
    """Share of training time inside per-step hooks; runs before the rename call it ``step_hook_time_fraction``."""
    value = summary.get("step_hook_share", summary.get("step_hook_time_fraction"))
    return None if value is None else float(value)


def _device(runs: Sequence[Summary]) -> str | None:
    """What the cell's epoch times were measured on (None for runs older than ``wall_time``)."""
    names = sorted({str(name) for r in runs if (name := (r.get("wall_time") or {}).get("device")) is not None})
    return " + ".join(names) if names else None


def _rest(row: Mapping[str, Any], *drop: str) -> str:
    """A row's setting without the named parts: cells that should be compared share it."""
    settings = {k: v for k, v in row["settings"].items() if k not in drop}
    return json.dumps(settings, sort_keys=True, default=str)


def _comparable(reference: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether ``reference`` is the cell to compare ``row`` with: the same settings and sparsity, or, for
    a reference that ignores sparsity (dense training), the same settings but how sparsity is laid out."""
    if reference["ignores_sparsity"]:
        return _rest(reference) == _rest(row, *_DENSE_IGNORES)
    return reference["sparsity"] == row["sparsity"] and _rest(reference) == _rest(row)


def _attach_baseline(rows: list[dict[str, Any]], baseline: str) -> None:
    """Per row: Welch's comparison with the baseline method's cell of the same setting and sparsity.

    Where the baseline method has several cells there (a hyper-parameter grid), the reference is the
    one with the fewest non-default hyper-parameters (the first such in table order); the others are
    compared with it like any other method.
    """
    for row in rows:
        candidates = [other for other in rows if other["method"] == baseline and _comparable(other, row)]
        row["baseline"] = baseline
        row["baseline_label"] = None
        row["baseline_candidates"] = len(candidates)
        empty = {"diff": None, "diff_ci_low": None, "diff_ci_high": None, "p_value": None, "detectable": None}
        if not candidates:
            row.update(verdict=f"no {baseline} cell", **empty)
            continue
        reference = min(candidates, key=lambda other: other["label"].count("=") if "(" in other["label"] else 0)
        row["baseline_label"] = reference["label"]
        if reference is row:
            row.update(verdict="baseline", **empty)
            continue
        result = welch(row["accuracies"], reference["accuracies"], bounds=DIFFERENCE_BOUNDS)
        row.update(
            verdict=result.verdict,
            diff=result.difference,
            diff_ci_low=result.ci_low,
            diff_ci_high=result.ci_high,
            p_value=result.p,
            detectable=result.detectable,
        )


def _attach_wall_ratios(rows: list[dict[str, Any]]) -> None:
    """Per row: its steady epoch time over that of the ``static`` cell at the same sparsity and settings,
    and over the ``dense`` cell of the same settings (None: no such cell, no times, or another device).

    Only the runs themselves are used: a ratio across devices or against a missing baseline would be a
    guess, so the tables say "n/a" instead."""
    for row in rows:
        static = [r for r in rows if r["method"] == "static" and r["sparsity"] == row["sparsity"] and _rest(r) == _rest(row)]
        dense = [r for r in rows if r["method"] == "dense" and _comparable(r, row)]
        for key, candidates in (("epoch_vs_static", static), ("epoch_vs_dense", dense)):
            same_device = candidates and candidates[0]["device"] == row["device"]
            reference = candidates[0]["epoch_seconds"] if same_device else None
            row[key] = row["epoch_seconds"] / reference if reference and row["epoch_seconds"] is not None else None


def _attach_paper(rows: list[dict[str, Any]]) -> None:
    """Per row: the paper's matching numbers and both gaps to dense (points of accuracy)."""
    from dstbench.analysis.paper import paper_matches

    for row in rows:
        settings = row["settings"]
        row["paper"] = paper_matches(
            row["method"], settings.get("model"), settings.get("dataset"), settings.get("distribution", ""), row["sparsity"]
        )
        dense = [r for r in rows if r["method"] == "dense" and _comparable(r, row)]
        row["our_gap"] = None
        if len(dense) == 1 and row["method"] != "dense":
            gap = welch(row["accuracies"], dense[0]["accuracies"], bounds=DIFFERENCE_BOUNDS)
            row.update(our_gap=gap.difference, our_gap_ci_low=gap.ci_low, our_gap_ci_high=gap.ci_high)


def _cell_row(runs: Sequence[Summary], method_hps: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The row of one cell (the runs of one setting, one per seed): its accuracies, statistics and costs."""
    first = runs[0]
    accuracies = [float(r["test_acc"]) for r in runs]
    cell = describe(accuracies, bounds=ACCURACY_BOUNDS)
    hps = _hyperparameters(first)  # tuples as in summary.json
    return {
        "method": first["method"],
        "label": _structured(
            _label(first["method"], hps, method_hps, str(_settings(first).get("budget", "1x"))),
            _settings(first).get("structure", "unstructured"),
        ),
        "settings": _settings(first),
        "hyperparameters": hps,
        "model": first.get("model"),
        "dataset": first.get("dataset"),
        "distribution": first["distribution"],
        "dense_layers": first.get("dense_layers"),
        "sparsity": _sparsity(first),
        "ignores_sparsity": _ignores_sparsity(first),
        "epochs": first.get("epochs"),
        "n": cell.n,
        "accuracies": accuracies,
        "test_acc_mean": cell.mean,
        "test_acc_std": cell.std,
        "test_acc_ci_low": cell.ci_low,
        "test_acc_ci_high": cell.ci_high,
        "train_flops": _mean([_flops(r, "train_flops") for r in runs]),
        "dense_train_flops": _mean([_flops(r, "dense_train_flops") for r in runs]),
        "train_flops_relative": _mean([_flops(r, "train_flops_relative") for r in runs]),
        "inference_flops": _mean([_flops(r, "inference_flops") for r in runs]),
        "topology_updates": statistics.fmean(r["topology_updates"] for r in runs),
        "update_time_fraction": statistics.fmean(r["update_time_fraction"] for r in runs),
        "step_hook_share": _mean([_hook_share(r) for r in runs]),
        "train_seconds": _mean([r.get("train_seconds") for r in runs]),
        "epoch_seconds": _mean([(r.get("wall_time") or {}).get("epoch_seconds") for r in runs]),
        "device": _device(runs),
        "itop_rate": statistics.fmean(r["itop_rate"] for r in runs),
        "final_iou": _mean([r.get("final_iou") for r in runs]),
        "run_dirs": [r.get("run_dir") for r in runs],
    }


def report_rows(
    summaries: Sequence[Summary], *, baseline: str | None = None, paper: bool = False
) -> list[dict[str, Any]]:
    """One row per cell, methods in order of first appearance, each by increasing sparsity.

    ``baseline`` defaults to the first method; ``paper`` adds the published numbers.
    """
    groups: dict[tuple[Any, ...], list[Summary]] = {}
    for summary in summaries:
        groups.setdefault(_key(summary), []).append(summary)
    hps_by_method: dict[str, list[Mapping[str, Any]]] = {}
    for runs in groups.values():
        hps_by_method.setdefault(runs[0]["method"], []).append(_hyperparameters(runs[0]))
    rows = [_cell_row(runs, hps_by_method[runs[0]["method"]]) for runs in groups.values()]
    method_order = {method: i for i, method in enumerate(dict.fromkeys(row["method"] for row in rows))}
    rows.sort(key=lambda row: (method_order[row["method"]], row["sparsity"]))
    if baseline is not None and baseline not in method_order:
        from dstbench.core.errors import ConfigError

        raise ConfigError(f"--baseline {baseline!r} is not among the methods ({', '.join(method_order)})")
    if rows:
        _attach_baseline(rows, baseline or rows[0]["method"])
    _attach_wall_ratios(rows)
    if paper:
        _attach_paper(rows)
    return rows


def run_summaries(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """What :func:`report_rows` reads of each finished run: its summary, folder and config."""
    return [{**(run.summary or {}), "run_dir": str(run.path), "config": run.config} for run in runs]


def write_report(
    folder: str | Path,
    *,
    baseline: str | None = None,
    paper: bool = False,
    out: str | Path | None = None,
    skip_incomplete: bool = False,
    skipped: list[Skipped] | None = None,
) -> str:
    """Write ``report.md`` and ``report.csv`` into ``out`` (default: ``folder``, the folder of runs it
    reads) and return the Markdown. ``out`` lets a report of a job still running, or of a folder that
    is not ours to write, go elsewhere. Only finished runs are read: anything else in ``folder`` is an
    error, or with ``skip_incomplete`` appended to ``skipped`` with its reason (see
    :func:`~dstbench.analysis.runs.report_runs`)."""
    runs, passed_over = report_runs(folder, skip_incomplete=skip_incomplete)
    if skipped is not None:
        skipped.extend(passed_over)
    summaries = run_summaries(runs)
    rows = report_rows(summaries, baseline=baseline, paper=paper)
    text = format_tables(rows, paper=paper, title=f"Report: {folder}")
    measured = speed_rows(rows, {summary["run_dir"]: summary for summary in summaries})
    if measured:  # runs that `dstbench speed` timed
        text += "\n" + speed_table(measured)
    target = Path(folder if out is None else out)
    atomic_write_text(target / "report.md", text)
    atomic_write_text(target / "report.csv", csv_table(rows))
    return text
