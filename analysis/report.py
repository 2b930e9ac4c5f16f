"""Tables shaped like BiDST Tables 1 and 2, from finished runs: Markdown to read, CSV to post-process.

One row per *setting*, i.e. everything that defines a run except its seed (model, method and its
hyper-parameters, distribution, dense-layer profile, sparsity, epochs), with

* test accuracy, mean ± std over the seeds, and their number n (Table 1);
* training FLOPs, absolute and relative to dense training of the same model (3·f_D·N·E), inference
  FLOPs and the number of mask updates (Table 2), each run's own numbers from its ``summary.json``;
* the share of wall time spent in mask updates (the Figure 5 question) and the ITOP rate R_s.

``report.md`` adds Table 1's layout: accuracy with methods as rows and sparsities as columns.
``dstbench compare`` prints the same long table through :func:`markdown_table`.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.atomic import atomic_write_text

from .runs import complete_runs

__all__ = ["report_rows", "markdown_table", "accuracy_matrix", "csv_table", "write_report", "COLUMNS"]

Summary = Mapping[str, Any]

COLUMNS: tuple[str, ...] = (
    "method",
    "distribution",
    "sparsity",
    "epochs",
    "test acc (%)",
    "n",
    "train FLOPs",
    "train FLOPs (× dense)",
    "inference FLOPs",
    "mask updates",
    "final IoU",
    "update time (%)",
    "ITOP R_s",
)
"""The Markdown table's header, in order."""

_SETTING = ("model", "method", "distribution", "dense_layers", "epochs")


def _sparsity(summary: Summary) -> float:
    """The nominal sparsity, except 0 for dense training (which ignores the configured value)."""
    return float(summary["sparsity"]) if summary.get("needs", {}).get("sparse", True) else 0.0


def _setting(summary: Summary) -> tuple[Any, ...]:
    hyperparameters = json.dumps(summary.get("hyperparameters", {}), sort_keys=True)
    return (*(summary.get(key) for key in _SETTING), _sparsity(summary), hyperparameters)


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the known values; None when no run has the number (e.g. runs older than FLOP logging)."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _flops(summary: Summary, key: str) -> float | None:
    flops = summary.get("flops") or {}
    value = flops.get(key)
    return None if value is None else float(value)


def _labels(groups: Sequence[Sequence[Summary]]) -> list[str]:
    """Method names, plus the hyper-parameters that tell apart two settings of the same method."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for runs in groups:
        by_method.setdefault(runs[0]["method"], []).append(runs[0].get("hyperparameters", {}))
    labels = []
    for runs in groups:
        method = runs[0]["method"]
        hps = by_method[method]
        varying = sorted(k for k in hps[0] if any(hp.get(k) != hps[0][k] for hp in hps))
        own = runs[0].get("hyperparameters", {})
        labels.append(f"{method} ({', '.join(f'{k}={own[k]}' for k in varying)})" if varying else method)
    return labels


def report_rows(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """One row per setting, methods in order of first appearance, each by increasing sparsity; numbers
    are means over the seeds."""
    groups: dict[tuple[Any, ...], list[Summary]] = {}
    for summary in summaries:
        groups.setdefault(_setting(summary), []).append(summary)
    rows = []
    for label, runs in zip(_labels(list(groups.values())), groups.values()):
        accuracies = [float(r["test_acc"]) for r in runs]
        first = runs[0]
        rows.append(
            {
                "method": first["method"],
                "label": label,
                "model": first.get("model"),
                "distribution": first["distribution"],
                "dense_layers": first.get("dense_layers"),
                "sparsity": _sparsity(first),
                "epochs": first.get("epochs"),
                "n": len(runs),
                "test_acc_mean": statistics.fmean(accuracies),
                "test_acc_std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
                "train_flops": _mean([_flops(r, "train_flops") for r in runs]),
                "dense_train_flops": _mean([_flops(r, "dense_train_flops") for r in runs]),
                "train_flops_relative": _mean([_flops(r, "train_flops_relative") for r in runs]),
                "inference_flops": _mean([_flops(r, "inference_flops") for r in runs]),
                "topology_updates": statistics.fmean(r["topology_updates"] for r in runs),
                "update_time_fraction": statistics.fmean(r["update_time_fraction"] for r in runs),
                "itop_rate": statistics.fmean(r["itop_rate"] for r in runs),
                "final_iou": _mean([r.get("final_iou") for r in runs]),
                "run_dirs": [r.get("run_dir") for r in runs],
            }
        )
    method_order = {method: i for i, method in enumerate(dict.fromkeys(row["method"] for row in rows))}
    return sorted(rows, key=lambda row: (method_order[row["method"]], row["sparsity"]))


def _sci(value: float | None) -> str:
    """1.82e9 rather than 1.82e+09; "-" when unknown."""
    if value is None:
        return "-"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _percent(sparsity: float) -> str:
    return f"{100 * sparsity:.6g}%"


def _distribution(row: Mapping[str, Any]) -> str:
    dense = row.get("dense_layers")
    return row["distribution"] if dense in (None, "none") else f"{row['distribution']} (dense: {dense})"


def _accuracy(row: Mapping[str, Any]) -> str:
    return f"{100 * row['test_acc_mean']:.2f} ± {100 * row['test_acc_std']:.2f}"


_CELLS: tuple[Callable[[Mapping[str, Any]], str], ...] = (
    lambda r: str(r["label"]),
    _distribution,
    lambda r: _percent(r["sparsity"]),
    lambda r: "-" if r["epochs"] is None else str(r["epochs"]),
    _accuracy,
    lambda r: str(r["n"]),
    lambda r: _sci(r["train_flops"]),
    lambda r: "-" if r["train_flops_relative"] is None else f"{r['train_flops_relative']:.3g}",
    lambda r: _sci(r["inference_flops"]),
    lambda r: f"{r['topology_updates']:g}",
    lambda r: "-" if r["final_iou"] is None else f"{r['final_iou']:.3f}",
    lambda r: f"{100 * r['update_time_fraction']:.2f}",
    lambda r: f"{r['itop_rate']:.3g}",
)


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The long table (Table 2 columns plus accuracy over seeds), one line per setting."""
    return _markdown(COLUMNS, [[cell(row) for cell in _CELLS] for row in rows])


def accuracy_matrix(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1's layout: test accuracy (mean ± std, %) by method and distribution × sparsity."""
    sparsities = sorted({row["sparsity"] for row in rows})
    cells: dict[tuple[str, str], dict[float, str]] = {}
    for row in rows:
        cells.setdefault((row["label"], _distribution(row)), {})[row["sparsity"]] = _accuracy(row)
    header = ["method", "distribution", *map(_percent, sparsities)]
    body = [[label, dist, *(by_s.get(s, "-") for s in sparsities)] for (label, dist), by_s in cells.items()]
    return _markdown(header, body)


_CSV_FIELDS = (
    "method", "label", "model", "distribution", "dense_layers", "sparsity", "epochs", "n", "test_acc_mean",
    "test_acc_std", "train_flops", "dense_train_flops", "train_flops_relative", "inference_flops",
    "topology_updates", "update_time_fraction", "itop_rate", "final_iou", "run_dirs",
)  # fmt: skip


def csv_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every number at full precision; ``run_dirs`` joined with ';'."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "run_dirs": ";".join(str(d) for d in row["run_dirs"])})
    return buffer.getvalue()


def write_report(folder: str | Path) -> str:
    """Write ``report.md`` and ``report.csv`` into ``folder`` (a folder of runs) and return the Markdown."""
    summaries = [{**(run.summary or {}), "run_dir": str(run.path)} for run in complete_runs(folder)]
    rows = report_rows(summaries)
    text = (
        f"# Report: {folder}\n\n"
        f"## Accuracy (Table 1 layout: test accuracy %, mean ± std over seeds)\n\n{accuracy_matrix(rows)}\n\n"
        f"## Cost (Table 2 layout)\n\n{markdown_table(rows)}\n\n"
        "Training FLOPs follow RigL App. H (docs/analysis.md) from each run's own masks and updates; "
        "× dense = relative to 3·f_D·N·E for the same model. Update time = share of training wall time "
        "spent in mask updates.\n"
    )
    atomic_write_text(Path(folder) / "report.md", text)
    atomic_write_text(Path(folder) / "report.csv", csv_table(rows))
    return text
