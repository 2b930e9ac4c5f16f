"""The speed table of ``report`` and the data of ``plot speed``: what ``dstbench speed`` measured on the
same runs as the accuracy table.

``dstbench speed RUN_DIR`` writes ``speed.json`` into the run folder (a derived file, like the
report's, not one of the run's sealed files, so it is read here as a plain bounded JSON file). For
every cell of the accuracy table (:func:`dstbench.analysis.report.report_rows`) and every backend
measured on its runs, one row: how many of the cell's runs were proved and timed (of all its runs), the speedup over
``masked`` of one training step (backends that train), of inference at batch 1 (latency) and at the
measured batch (throughput), end to end, and the
re-compression overhead: the time to rebuild the backend's format after one mask update, times the
run's number of updates (the analogue of the paper's re-compilation overhead, Figure 5 right), also
as a share of the run's training time. Means over the cell's seeds; a backend refused on a run says why.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dstbench.runs.integrity import read_json

from dstbench.analysis.tables import _markdown, format_value

__all__ = ["SPEED_FILE", "read_speed", "speed_rows", "speed_table"]

SPEED_FILE = "speed.json"


def read_speed(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``speed.json`` (None when ``dstbench speed`` was not run on it)."""
    path = Path(run_dir) / SPEED_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = read_json(path, None, Path(run_dir))
    return data


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _backend_row(row: Mapping[str, Any], name: str, measured: Sequence[tuple[dict[str, Any], float | None]]) -> dict[str, Any]:
    """One backend on one cell: ``measured`` holds (speed.json, the run's training seconds) per run."""
    records = [(speed, speed["backends"][name], seconds) for speed, seconds in measured if name in speed["backends"]]
    proved = [(speed, record, seconds) for speed, record, seconds in records if record["status"] == "proved"]
    refused = [record for _, record, _ in records if record["status"] != "proved"]

    def speedup(speed: Mapping[str, Any], label: str) -> float | None:
        timed = speed["end_to_end"][label] if label.startswith("batch_") else speed.get(label, {})
        value = timed.get(name, {}).get("speedup_over_masked")
        return None if value is None else float(value)

    totals = [float(record["rebuild_seconds_total"]) for _, record, _ in proved]
    shares = [float(record["rebuild_seconds_total"]) / seconds for _, record, seconds in proved if seconds]
    return {
        "method": row["method"], "label": row["label"], "sparsity": row["sparsity"], "settings": row["settings"],
        "backend": name, "proved": len(proved),
        "status": refused[0]["status"] if refused and not proved else "proved",
        "reason": refused[0].get("reason") if refused else None,
        "batch_sizes": sorted({int(speed["batch_size"]) for speed, _, _ in proved}),
        "threads": sorted({int(speed["provenance"]["threads"]) for speed, _, _ in proved}),
        "train_speedup": _mean([speedup(speed, "training_step") for speed, _, _ in proved]),
        "latency_speedup": _mean([speedup(speed, "batch_1") for speed, _, _ in proved]),
        "throughput_speedup": _mean([speedup(speed, f"batch_{speed['batch_size']}") for speed, _, _ in proved]),
        "rebuild_seconds_per_update": _mean([float(record["rebuild_seconds_per_update"]) for _, record, _ in proved]),
        "updates": _mean([float(record["updates"]) for _, record, _ in proved]),
        "rebuild_seconds_total": _mean(totals),
        "overhead_fraction": _mean(shares),
    }  # fmt: skip


def speed_rows(rows: Sequence[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per report row (cell) and backend, what ``speed.json`` of its runs says; ``summaries`` maps a run
    folder to its summary (for the training time the overhead is a share of)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        measured = []
        for run_dir in row["run_dirs"]:
            speed = read_speed(run_dir) if run_dir else None
            if speed is not None:
                measured.append((speed, summaries.get(run_dir, {}).get("train_seconds")))
        backends = dict.fromkeys(name for speed, _ in measured for name in speed["backends"])
        ordered = sorted(backends, key=lambda name: name != "masked")  # the baseline first, then as measured
        out.extend({**_backend_row(row, name, measured), "runs": len(row["run_dirs"])} for name in ordered)
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def speed_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per cell and backend, speedups over ``masked`` and the re-compression overhead."""
    header = ["method", "sparsity", "backend", "runs timed", "train step", "batch 1", "batch B", "B", "threads",
              "rebuild ms/update", "updates", "overhead s", "overhead % of training"]  # fmt: skip
    body = []
    for row in rows:
        lead = [row["label"], f"{100 * row['sparsity']:.6g}%", row["backend"], f"{row['proved']}/{row['runs']}"]
        if not row["proved"]:
            body.append([*lead, f"{row['status']}: {row['reason']}", *["-"] * 8])
            continue
        body.append([
            *lead, _x(row["train_speedup"]), _x(row["latency_speedup"]), _x(row["throughput_speedup"]), ",".join(map(str, row["batch_sizes"])),
            ",".join(map(str, row["threads"])), _ms(row["rebuild_seconds_per_update"]), format_value(row["updates"]),
            "-" if row["rebuild_seconds_total"] is None else f"{row['rebuild_seconds_total']:.3g}", _share(row["overhead_fraction"]),
        ])  # fmt: skip
    note = ("Measured by `dstbench speed` (end to end, speedup = masked time / backend time, interleaved in one "
            "process; train step: forward, backward and SGD, for backends that train); overhead = rebuild time per mask update x the run's updates. Read them with the threads "
            "and load recorded in each speed.json.")  # fmt: skip
    return "## Speed (measured, speedup over masked)\n\n" + _markdown(header, body) + "\n\n" + note + "\n"
