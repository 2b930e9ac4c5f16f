"""The report's tables, formatted: Markdown to read (accuracy with intervals, Table 1's layout, the
paper's numbers, Table 2's cost columns) and CSV to post-process, from the rows of
:func:`dstbench.analysis.report.report_rows`.

One format per column: a number is shown the same way in every table it appears in.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dstbench.analysis.stats import NO_INTERVAL

__all__ = [
    "SHOWN",
    "COLUMNS",
    "format_value",
    "markdown_table",
    "accuracy_table",
    "accuracy_matrix",
    "paper_table",
    "csv_table",
    "format_tables",
]

# Settings every table shows in their own columns; any other differing option goes to "other settings".
SHOWN = ("model", "dataset", "epochs", "distribution", "dense_layers")


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    return "-" if value is None else _three_digits(value)


def _three_digits(value: float) -> str:
    """``#.3g`` without its artefacts above 100: 152.3 gives "152", not "152."; 1523 gives "1523", not
    "1.52e+03"."""
    text = f"{value:#.3g}"
    return f"{value:.0f}" if text.endswith(".") or ("e+" in text and abs(value) >= 100) else text


def _na(value: float | None, render: Callable[[float], str]) -> str:
    """Wall-time columns: "n/a" where the runs cannot give the number (no static/dense cell, runs older
    than the wall-time record, or the reference measured on another device)."""
    return "n/a" if value is None else render(value)


def _ratio(value: float) -> str:
    return f"{value:.2f}"


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
    names = sorted({k for row in rows for k in row["settings"]} - set(SHOWN))
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
            ("other settings", lambda r: ", ".join(f"{k}={format_value(r['settings'][k])}" for k in other if k in r["settings"]))
        )
    return columns


_COST: tuple[Column, ...] = (
    ("n", lambda r: str(r["n"])),
    ("train FLOPs", lambda r: _sci(r["train_flops"])),
    ("train FLOPs (× dense)", lambda r: _significant(r["train_flops_relative"])),
    ("epoch (s)", lambda r: _na(r.get("epoch_seconds"), _three_digits)),
    ("epoch time (× static)", lambda r: _na(r.get("epoch_vs_static"), _ratio)),
    ("epoch time (× dense)", lambda r: _na(r.get("epoch_vs_dense"), _ratio)),
    ("inference FLOPs", lambda r: _sci(r["inference_flops"])),
    ("mask updates", lambda r: f"{r['topology_updates']:g}"),
    ("final IoU", lambda r: _fixed(r["final_iou"], 3)),
    ("mask-update time (%)", lambda r: _fixed(r["update_time_fraction"], 2, 100)),
    ("inside per-step hooks (%)", lambda r: _fixed(r.get("step_hook_share"), 2, 100)),
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


def _measured_on(rows: Sequence[Mapping[str, Any]]) -> str:
    """The line naming the device the epoch times come from (several: the table has a device column)."""
    devices = sorted({str(row.get("device") or "n/a") for row in rows})
    return f"Wall times measured on: {devices[0]}.\n\n" if len(devices) == 1 else ""


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The cost table (Table 2 columns), one line per cell; a device column when the cells' differ."""
    several = len({str(row.get("device") or "n/a") for row in rows}) > 1
    device: list[Column] = [("device", lambda r: str(r.get("device") or "n/a"))] if several else []
    return _render(rows, [*_setting_columns(rows), *device, *_COST])


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
    "inference_flops", "epoch_seconds", "epoch_vs_static", "epoch_vs_dense", "device", "topology_updates",
    "update_time_fraction", "step_hook_share", "train_seconds",
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
    "Test accuracy: mean ± sample std over seeds; 95% CI: Student t with n-1 degrees of freedom, clipped to "
    "the possible range [0, 100]. Δ: difference of means against the baseline's cell with the same settings, "
    "95% Welch interval, clipped to [-100, 100]; "
    "p: Welch's two-sided t-test; verdict at alpha = 0.05; detectable Δ: the true difference a two-sided "
    "test at alpha = 0.05 would find with 80% power at these n and spreads (docs/analysis.md).\n\n"
    "Training FLOPs follow RigL App. H from each run's own masks and updates; × dense = relative to "
    "3·f_D·N·E for the same model. Epoch: steady-state seconds per epoch, the median training wall time of "
    "epochs 2..E (a one-epoch run: its only epoch, warm-up included); × static and × dense: over the static "
    "cell at the same sparsity and the dense cell of the same runs, on the same device (n/a: no such cell, "
    "no times, or another device). This is what a method costs in wall time. Mask-update time: share of "
    "training wall time spent in topology updates; inside per-step hooks: share spent inside the method's "
    "per-step hooks (BiDST's score learning), training work, not update work, and not all the method costs."
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
        missing = (
            f" {unmatched} of {len(rows)} cells have no published counterpart (model, dataset, distribution, "
            "sparsity or method not in its tables)." if unmatched else " Every cell has a published counterpart."
        )
        parts.append(f"## The paper beside us (gaps to dense, in points)\n\nPublished numbers: {CITATION}.{missing}\n\n{published}\n")
    parts.append(f"## Accuracy (Table 1 layout: test accuracy %, mean ± std over seeds)\n\n{accuracy_matrix(rows)}\n")
    parts.append(f"## Cost (Table 2 layout)\n\n{_measured_on(rows)}{markdown_table(rows)}\n")
    parts.append(_NOTES + "\n")
    return "\n".join(p for p in parts if p)
