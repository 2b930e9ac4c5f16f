"""Tables shaped like BiDST Tables 1 and 2, from finished runs: Markdown to read, CSV to post-process.

One row (a *cell*) per setting: everything that defines a run except its seed. That is the method and
its resolved hyper-parameters, the sparsity, and every training option in the run's ``config.json``
(model, dataset, epochs, distribution, dense-layer profile, learning rate, subset sizes, ...), less the
options that cannot change the numbers (device, workers, paths). Runs are grouped by *all* of it, so
nothing is merged or dropped; the tables show every setting that differs between rows:

* model, dataset, epochs, distribution (with its dense-layer profile) and sparsity always;
* the method's non-default hyper-parameters in its label, e.g. ``rigl (delta_t=20)``;
* any other option that differs between rows in an ``other settings`` column.

Per cell: n seeds, test accuracy mean ± std and its 95 % Student-t interval, and against a baseline
method (default: the first method listed) the difference of means, its 95 % Welch interval, Welch's
p-value, a verdict in words and the smallest difference these seeds could detect
(:mod:`.stats` says which test and why). ``paper=True`` adds the BiDST paper's published number for
every cell that has one (:mod:`.paper`), as gaps to dense training.

The cost table (Table 2's columns): training FLOPs, absolute and relative to dense training of the same
model (3·f_D·N·E), inference FLOPs, mask updates, the share of training time spent in mask updates, and
separately in the method's per-step work (BiDST learns its scores every step: that is training time,
not update time), and the ITOP rate R_s.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.runs.atomic import atomic_write_text
from dstbench.runs.configs import flat_config

from dstbench.analysis.runs import complete_runs
from dstbench.analysis.stats import NO_INTERVAL, describe, welch

__all__ = [
    "report_rows",
    "markdown_table",
    "accuracy_table",
    "accuracy_matrix",
    "paper_table",
    "csv_table",
    "format_tables",
    "write_report",
    "COLUMNS",
]

Summary = Mapping[str, Any]

# Options that never change a run's numbers (or are reported elsewhere): not part of a cell's setting.
_NOT_SETTINGS = frozenset(
    {"seed", "out", "device", "num_workers", "eval_batch_size", "data_dir", "loader", "beton_dir", "hp", "method", "sparsity",
     "logger"}
)
# Dense training ignores how sparsity would be distributed.
_DENSE_IGNORES = frozenset({"distribution", "dense_layers", "min_active"})
# Settings every table shows in their own columns; any other differing option goes to "other settings".
_SHOWN = ("model", "dataset", "epochs", "distribution", "dense_layers")


def _sparsity(summary: Summary) -> float:
    """The nominal sparsity, except 0 for dense training (which ignores the configured value)."""
    return float(summary["sparsity"]) if summary.get("needs", {}).get("sparse", True) else 0.0


def _settings(summary: Summary) -> dict[str, Any]:
    """The options that define a run (its config.json where known, else the summary's own fields)."""
    config = flat_config(summary["config"]) if summary.get("config") else {key: summary.get(key) for key in _SHOWN}
    dense_only = _DENSE_IGNORES if not summary.get("needs", {}).get("sparse", True) else frozenset()
    return {k: v for k, v in sorted(config.items()) if k not in _NOT_SETTINGS and k not in dense_only}


def _key(summary: Summary) -> tuple[Any, ...]:
    hps = json.dumps(summary.get("hyperparameters", {}), sort_keys=True, default=str)
    return (summary["method"], _sparsity(summary), hps, json.dumps(_settings(summary), sort_keys=True, default=str))


def _default_hyperparameters(method: str) -> dict[str, Any] | None:
    """The registered class's defaults (JSON-normalised), or None for a method no longer installed."""
    from dstbench.core.errors import DstbenchError
    from dstbench.core.registry import get_method

    try:
        cls = get_method(method)
    except DstbenchError:
        return None
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    normalised: dict[str, Any] = json.loads(json.dumps(defaults, default=str))
    return normalised


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(method: str, hps: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]]) -> str:
    """``method (name=value, ...)`` with the non-default hyper-parameters (or, for a method that is no
    longer registered, those that differ between its cells)."""
    defaults = _default_hyperparameters(method)
    if defaults is not None:
        shown = sorted(k for k in hps if k in defaults and hps[k] != defaults[k])
    else:
        shown = sorted(k for k in hps if any(other.get(k) != hps[k] for other in siblings))
    return f"{method} ({', '.join(f'{k}={_value(hps[k])}' for k in shown)})" if shown else method


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the known values; None when no run has the number (e.g. runs older than FLOP logging)."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _flops(summary: Summary, key: str) -> float | None:
    flops = summary.get("flops") or {}
    value = flops.get(key)
    return None if value is None else float(value)


def _rest(row: Mapping[str, Any], *drop: str) -> str:
    """A row's setting without the named parts: cells that should be compared share it."""
    settings = {k: v for k, v in row["settings"].items() if k not in drop}
    return json.dumps(settings, sort_keys=True, default=str)


def _attach_baseline(rows: list[dict[str, Any]], baseline: str) -> None:
    """Per row: Welch's comparison with the baseline method's cell of the same setting and sparsity.

    Where the baseline method has several cells there (a hyper-parameter grid), the reference is the
    one with the fewest non-default hyper-parameters (the first such in table order); the others are
    compared with it like any other method.
    """
    for row in rows:
        candidates = [
            other
            for other in rows
            if other["method"] == baseline and other["sparsity"] == row["sparsity"] and _rest(other) == _rest(row)
        ]
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
        result = welch(row["accuracies"], reference["accuracies"])
        row.update(
            verdict=result.verdict,
            diff=result.difference,
            diff_ci_low=result.ci_low,
            diff_ci_high=result.ci_high,
            p_value=result.p,
            detectable=result.detectable,
        )


def _attach_paper(rows: list[dict[str, Any]]) -> None:
    """Per row: the paper's matching numbers and both gaps to dense (points of accuracy)."""
    from dstbench.analysis.paper import paper_matches

    for row in rows:
        settings = row["settings"]
        row["paper"] = paper_matches(
            row["method"], settings.get("model"), settings.get("dataset"), settings.get("distribution", ""), row["sparsity"]
        )
        # Our dense cell: same options (the distribution and dense-layer profile mean nothing for dense).
        rest = _rest(row, *_DENSE_IGNORES)
        dense = [r for r in rows if r["method"] == "dense" and _rest(r) == rest]
        row["our_gap"] = None
        if len(dense) == 1 and row["method"] != "dense":
            gap = welch(row["accuracies"], dense[0]["accuracies"])
            row.update(our_gap=gap.difference, our_gap_ci_low=gap.ci_low, our_gap_ci_high=gap.ci_high)


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
        hps_by_method.setdefault(runs[0]["method"], []).append(
            json.loads(json.dumps(runs[0].get("hyperparameters", {}), default=str))
        )
    rows = []
    for runs in groups.values():
        first = runs[0]
        accuracies = [float(r["test_acc"]) for r in runs]
        cell = describe(accuracies)
        hps = json.loads(json.dumps(first.get("hyperparameters", {}), default=str))  # tuples as in summary.json
        rows.append(
            {
                "method": first["method"],
                "label": _label(first["method"], hps, hps_by_method[first["method"]]),
                "settings": _settings(first),
                "hyperparameters": hps,
                "model": first.get("model"),
                "dataset": first.get("dataset"),
                "distribution": first["distribution"],
                "dense_layers": first.get("dense_layers"),
                "sparsity": _sparsity(first),
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
                "step_hook_time_fraction": _mean([r.get("step_hook_time_fraction") for r in runs]),
                "train_seconds": _mean([r.get("train_seconds") for r in runs]),
                "itop_rate": statistics.fmean(r["itop_rate"] for r in runs),
                "final_iou": _mean([r.get("final_iou") for r in runs]),
                "run_dirs": [r.get("run_dir") for r in runs],
            }
        )
    method_order = {method: i for i, method in enumerate(dict.fromkeys(row["method"] for row in rows))}
    rows.sort(key=lambda row: (method_order[row["method"]], row["sparsity"]))
    if baseline is not None and baseline not in method_order:
        from dstbench.core.errors import ConfigError

        raise ConfigError(f"--baseline {baseline!r} is not among the methods ({', '.join(method_order)})")
    if rows:
        _attach_baseline(rows, baseline or rows[0]["method"])
    if paper:
        _attach_paper(rows)
    return rows


# -- formatting: one format per column ---------------------------------------------------------------
def _sci(value: float | None) -> str:
    """1.82e9 rather than 1.82e+09; "-" when unknown."""
    if value is None:
        return "-"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _fixed(value: float | None, digits: int, scale: float = 1.0, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{scale * value:+.{digits}f}" if sign else f"{scale * value:.{digits}f}"


def _significant(value: float | None) -> str:
    """Three significant digits, trailing zeros kept (0.170, 0.0142, 8.20e-05): small shares at extreme
    sparsity stay readable and every cell of the column has the same precision."""
    return "-" if value is None else f"{value:#.3g}"


def _percent(sparsity: float) -> str:
    return f"{100 * sparsity:.6g}%"


def _distribution(row: Mapping[str, Any]) -> str:
    if "distribution" not in row["settings"]:
        return "- (dense)"
    dense = row.get("dense_layers")
    return row["distribution"] if dense in (None, "none") else f"{row['distribution']} (dense: {dense})"


def _accuracy(row: Mapping[str, Any]) -> str:
    """``93.55 ± 0.11`` over seeds; one seed has no spread to show: ``93.55 (n=1)``."""
    if row["test_acc_std"] is None:
        return f"{100 * row['test_acc_mean']:.2f} (n={row['n']})"
    return f"{100 * row['test_acc_mean']:.2f} ± {100 * row['test_acc_std']:.2f}"


def _interval(low: float | None, high: float | None, *, sign: bool = False) -> str:
    return f"[{_fixed(low, 2, 100, sign)}, {_fixed(high, 2, 100, sign)}]"


def _ci(row: Mapping[str, Any]) -> str:
    if row["test_acc_ci_low"] is None:
        return NO_INTERVAL if row["n"] == 1 else "-"
    return _interval(row["test_acc_ci_low"], row["test_acc_ci_high"])


def _difference(row: Mapping[str, Any]) -> str:
    if row.get("diff") is None:
        return "-"
    if row["diff_ci_low"] is None:
        return _fixed(row["diff"], 2, 100, sign=True)
    return f"{_fixed(row['diff'], 2, 100, sign=True)} {_interval(row['diff_ci_low'], row['diff_ci_high'], sign=True)}"


def _p(row: Mapping[str, Any]) -> str:
    p = row.get("p_value")
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _other_settings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Options (beyond the shown columns) whose value differs between rows."""
    names = sorted({k for row in rows for k in row["settings"]} - set(_SHOWN))
    values = {k: {json.dumps(row["settings"][k], default=str) for row in rows if k in row["settings"]} for k in names}
    return [k for k in names if len(values[k]) > 1]


Column = tuple[str, Callable[[Mapping[str, Any]], str]]


def _setting_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    columns: list[Column] = [
        ("method", lambda r: str(r["label"])),
        ("model", lambda r: str(r["model"])),
        ("dataset", lambda r: str(r["dataset"])),
        ("epochs", lambda r: "-" if r["epochs"] is None else str(r["epochs"])),
        ("distribution", _distribution),
        ("sparsity", lambda r: _percent(r["sparsity"])),
    ]
    other = _other_settings(rows)
    if other:
        columns.append(
            ("other settings", lambda r: ", ".join(f"{k}={_value(r['settings'][k])}" for k in other if k in r["settings"]))
        )
    return columns


_COST: tuple[Column, ...] = (
    ("n", lambda r: str(r["n"])),
    ("train FLOPs", lambda r: _sci(r["train_flops"])),
    ("train FLOPs (× dense)", lambda r: _significant(r["train_flops_relative"])),
    ("inference FLOPs", lambda r: _sci(r["inference_flops"])),
    ("mask updates", lambda r: f"{r['topology_updates']:g}"),
    ("final IoU", lambda r: _fixed(r["final_iou"], 3)),
    ("mask-update time (%)", lambda r: _fixed(r["update_time_fraction"], 2, 100)),
    ("per-step method time (%)", lambda r: _fixed(r["step_hook_time_fraction"], 2, 100)),
    ("ITOP R_s", lambda r: _significant(r["itop_rate"])),
)

COLUMNS: tuple[str, ...] = (
    "method", "model", "dataset", "epochs", "distribution", "sparsity", *(name for name, _ in _COST),
)  # fmt: skip
"""The cost table's header when no other option differs between rows."""


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _render(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    return _markdown([name for name, _ in columns], [[cell(row) for _, cell in columns] for row in rows])


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The cost table (Table 2 columns), one line per cell."""
    return _render(rows, [*_setting_columns(rows), *_COST])


def _against(rows: Sequence[Mapping[str, Any]], baseline: str) -> list[Column]:
    """A column naming the baseline cell where it was chosen among several (a hyper-parameter grid)."""
    if all(row.get("baseline_candidates", 0) <= 1 for row in rows):
        return []
    return [("against", lambda r: str(r.get("baseline_label") or "-"))]


def accuracy_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy over seeds with its interval, and Welch's comparison with the baseline's cell."""
    baseline = rows[0]["baseline"] if rows else "baseline"
    columns: list[Column] = [
        *_setting_columns(rows),
        ("n", lambda r: str(r["n"])),
        ("test acc (%)", _accuracy),
        ("95% CI", _ci),
        (f"Δ vs {baseline} (95% CI)", _difference),
        *_against(rows, baseline),
        ("p (Welch)", _p),
        ("verdict", lambda r: str(r["verdict"])),
        ("detectable Δ", lambda r: _fixed(r.get("detectable"), 2, 100)),
    ]
    return _render(rows, columns)


def paper_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every cell with a published counterpart: the paper's accuracy and gap to dense beside ours."""
    body = []
    for row in rows:
        for published in row.get("paper", []):
            ours = row.get("our_gap")
            gap = "no dense cell" if ours is None else _fixed(ours, 2, 100, sign=True)
            if ours is not None and row.get("our_gap_ci_low") is not None:
                gap += f" {_interval(row['our_gap_ci_low'], row['our_gap_ci_high'], sign=True)}"
            difference = "-" if ours is None else f"{100 * ours - published.gap:+.2f}"
            body.append(
                [
                    str(row["label"]),
                    str(row["model"]),
                    str(row["dataset"]),
                    _distribution(row),
                    _percent(row["sparsity"]),
                    _accuracy(row),
                    gap,
                    f"Table {published.table}",
                    f"{published.accuracy:.2f}",
                    f"{published.dense_accuracy:.2f}",
                    f"{published.gap:+.2f}",
                    difference,
                ]
            )
    header = [
        "method", "model", "dataset", "distribution", "sparsity", "our acc (%)", "our gap to dense (95% CI)",
        "paper", "paper acc (%)", "paper dense (%)", "paper gap", "our gap - paper gap",
    ]  # fmt: skip
    return _markdown(header, body) if body else "(no cell has a published counterpart)"


def accuracy_matrix(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1's layout: accuracy by cell (all settings but sparsity) × sparsity; nothing is dropped."""
    sparsities = sorted({row["sparsity"] for row in rows})
    columns = _setting_columns(rows)
    fixed = [(name, cell) for name, cell in columns if name != "sparsity"]
    cells: dict[tuple[str, ...], dict[float, str]] = {}
    for row in rows:
        by_sparsity = cells.setdefault(tuple(cell(row) for _, cell in fixed), {})
        if row["sparsity"] in by_sparsity:  # cannot happen: the row key is every setting but sparsity
            raise AssertionError(f"two cells for {row['label']} at {row['sparsity']}")
        by_sparsity[row["sparsity"]] = _accuracy(row)
    header = [name for name, _ in fixed] + [_percent(s) for s in sparsities]
    body = [[*key, *(by_s.get(s, "-") for s in sparsities)] for key, by_s in cells.items()]
    return _markdown(header, body)


_CSV_FIELDS = (
    "method", "label", "model", "dataset", "distribution", "dense_layers", "sparsity", "epochs", "n",
    "test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "baseline", "baseline_label", "diff", "diff_ci_low",
    "diff_ci_high", "p_value", "verdict", "detectable", "train_flops", "dense_train_flops", "train_flops_relative",
    "inference_flops", "topology_updates", "update_time_fraction", "step_hook_time_fraction", "train_seconds",
    "itop_rate", "final_iou", "settings", "hyperparameters", "run_dirs",
)  # fmt: skip


def csv_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every number at full precision (empty where there is none); ``run_dirs`` joined with ';'."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "settings": json.dumps(row["settings"], sort_keys=True, default=str),
                "hyperparameters": json.dumps(row["hyperparameters"], sort_keys=True, default=str),
                "run_dirs": ";".join(str(d) for d in row["run_dirs"]),
            }
        )
    return buffer.getvalue()


_NOTES = (
    "Test accuracy: mean ± sample std over seeds; 95% CI: Student t with n-1 degrees of freedom. "
    "Δ: difference of means against the baseline's cell with the same settings, 95% Welch interval; "
    "p: Welch's two-sided t-test; verdict at alpha = 0.05; detectable Δ: the true difference a two-sided "
    "test at alpha = 0.05 would find with 80% power at these n and spreads (docs/analysis.md).\n\n"
    "Training FLOPs follow RigL App. H from each run's own masks and updates; × dense = relative to "
    "3·f_D·N·E for the same model. Mask-update time: share of training wall time spent in topology updates; "
    "per-step method time: share spent in the method's per-step hooks (BiDST's score learning), which is "
    "training work, not update work."
)


def format_tables(rows: Sequence[Mapping[str, Any]], *, paper: bool = False, title: str | None = None) -> str:
    """Accuracy with statistics, (optionally) the paper beside us, Table 1's layout and the cost table."""
    parts = [f"# {title}\n" if title else ""]
    baseline = rows[0]["baseline"] if rows else "-"
    parts.append(f"## Accuracy over seeds (baseline: {baseline})\n\n{accuracy_table(rows)}\n")
    if paper:
        from dstbench.analysis.paper import CITATION

        published = paper_table(rows)
        unmatched = sum(not row.get("paper") for row in rows)
        parts.append(
            "## The paper beside us (gaps to dense, in points)\n\n"
            f"Published numbers: {CITATION}. {unmatched} of {len(rows)} cells have no published counterpart "
            "(model, dataset, distribution, sparsity or method not in its tables).\n\n"
            f"{published}\n"
        )
    parts.append(f"## Accuracy (Table 1 layout: test accuracy %, mean ± std over seeds)\n\n{accuracy_matrix(rows)}\n")
    parts.append(f"## Cost (Table 2 layout)\n\n{markdown_table(rows)}\n")
    parts.append(_NOTES + "\n")
    return "\n".join(p for p in parts if p)


def write_report(
    folder: str | Path, *, baseline: str | None = None, paper: bool = False, out: str | Path | None = None
) -> str:
    """Write ``report.md`` and ``report.csv`` into ``out`` (default: ``folder``, the folder of runs it
    reads) and return the Markdown. ``out`` lets a report of a job still running, or of a folder that
    is not ours to write, go elsewhere; only finished runs are read."""
    summaries = [
        {**(run.summary or {}), "run_dir": str(run.path), "config": run.config} for run in complete_runs(folder)
    ]
    rows = report_rows(summaries, baseline=baseline, paper=paper)
    text = format_tables(rows, paper=paper, title=f"Report: {folder}")
    target = Path(folder if out is None else out)
    atomic_write_text(target / "report.md", text)
    atomic_write_text(target / "report.csv", csv_table(rows))
    return text
