"""Pool per-seed accuracies recorded across sessions into the statistics `dstbench report` prints.

    python docs/pool_seeds.py                       # docs/data/c10_r32_e5_seeds.csv
    python docs/pool_seeds.py FILE.csv --baseline rigl

Why this exists: the 5-seed CIFAR-10 grid of docs/results.md took longer than one session's machine
lived, and a session's run folders go with its machine. What survives is each run's test accuracy,
written down when the run finished, and a check that reruns on the same kind of CPU give the very
same number (runs are deterministic there). This script turns such a record (CSV: method, seed,
test_acc in %, source) into the report's statistics with the same functions
(:func:`dstbench.analysis.stats.describe` and :func:`~dstbench.analysis.stats.welch`, clipped to the
possible range) and the paper's gaps to dense (:func:`dstbench.analysis.paper.paper_matches`).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from dstbench.analysis.paper import paper_matches
from dstbench.analysis.stats import ACCURACY_BOUNDS, DIFFERENCE_BOUNDS, describe, seeds_needed, welch
from dstbench.analysis.tables import _fixed, _interval  # the report's number formats, one source

DEFAULT = Path(__file__).with_name("data") / "c10_r32_e5_seeds.csv"
SETTING = {"model": "cifar_resnet32", "dataset": "cifar10", "distribution": "erk", "sparsity": 0.9}
"""The one setting the record holds (every row of the CSV): what the paper's numbers are looked up for."""
ONE_POINT = 0.01
"""The difference (1 point of accuracy) whose seed count the table states: the size of the paper's gaps."""


def read_record(path: Path) -> dict[str, dict[int, float]]:
    """method -> seed -> test accuracy as a fraction, methods in order of first appearance."""
    record: dict[str, dict[int, float]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            try:
                method, seed, accuracy = row["method"], int(row["seed"]), float(row["test_acc"])
            except (KeyError, TypeError, ValueError):
                raise SystemExit(f"{path}: not a method,seed,test_acc row: {row}") from None
            if not 0 <= accuracy <= 100:
                raise SystemExit(f"{path}: {method} seed {seed}: test_acc {accuracy} is not a percentage")
            seeds = record.setdefault(method, {})
            if seed in seeds:
                raise SystemExit(f"{path}: {method} seed {seed} is recorded twice")
            seeds[seed] = accuracy / 100
    return record


def _points(value: float | None, sign: bool = False) -> str:
    """A fraction in points with two decimals, as the report prints it."""
    return _fixed(value, 2, 100, sign)


def per_seed_table(record: dict[str, dict[int, float]]) -> list[str]:
    seeds = sorted({seed for by_seed in record.values() for seed in by_seed})
    lines = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for method, by_seed in record.items():
        lines.append(f"| {method} | " + " | ".join(_points(by_seed.get(s)) for s in seeds) + " |")
    return lines


def pooled_table(record: dict[str, dict[int, float]], baseline: str) -> list[str]:
    """One row per method: mean ± std and its t interval, Welch against the baseline (and the seeds per
    method it would take to detect a 1-point difference at these spreads), Welch against dense, and the
    paper's gap to dense where it has the cell."""
    if baseline not in record:
        raise SystemExit(f"--baseline {baseline!r} is not among the methods ({', '.join(record)})")
    base = list(record[baseline].values())
    dense = list(record["dense"].values()) if "dense" in record else None
    lines = [
        "| method | n | test acc (%) | 95% CI | Δ vs " + baseline + " (95% CI) | p (Welch) | verdict | detectable Δ"
        " | seeds for a 1-point Δ | gap to dense (95% CI) | paper gap |",
        "|---" * 11 + "|",
    ]
    for method, by_seed in record.items():
        values = list(by_seed.values())
        cell = describe(values, bounds=ACCURACY_BOUNDS)
        spread = "" if cell.std is None else f" ± {_points(cell.std)}"
        against = ["-", "-", "baseline" if method == baseline else "-", "-", "-"]
        if method not in (baseline, "dense"):
            c = welch(values, base, bounds=DIFFERENCE_BOUNDS)
            p = "-" if c.p is None else f"{c.p:.3f}"
            base_std = describe(base).std
            needed = str(seeds_needed(cell.std, base_std, ONE_POINT)) if cell.std and base_std else "-"
            difference = f"{_points(c.difference, True)} {_interval(c.ci_low, c.ci_high, sign=True)}"
            against = [difference, p, c.verdict, _points(c.detectable), needed]
        gap, paper = "-", "-"
        if dense is not None and method != "dense":
            g = welch(values, dense, bounds=DIFFERENCE_BOUNDS)
            gap = f"{_points(g.difference, True)} {_interval(g.ci_low, g.ci_high, sign=True)}"
            matches = paper_matches(method, SETTING["model"], SETTING["dataset"], SETTING["distribution"], SETTING["sparsity"])
            paper = ", ".join(f"{m.gap:+.2f} (Table {m.table})" for m in matches) or "none published"
        ci = "-" if cell.ci_low is None else _interval(cell.ci_low, cell.ci_high)
        lines.append(f"| {method} | {cell.n} | {_points(cell.mean)}{spread} | {ci} | " + " | ".join([*against, gap, paper]) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--baseline", default="rigl")
    args = parser.parse_args(argv)
    record = read_record(args.record)
    print("\n".join(["Test accuracy (%) per seed:", "", *per_seed_table(record), ""]))
    print("\n".join(["Pooled over seeds:", "", *pooled_table(record, args.baseline)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
