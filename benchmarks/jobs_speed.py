"""``compare --jobs 2`` wall time against ``--jobs 1`` for the same 4-run grid (CPU), side by side.

Each round trains the grid from scratch twice, once per job count, in fresh folders; the order of
the two alternates between rounds so a load change hits both; the ratio is of medians. The tables
(without the wall-clock column) must be identical, and the script says whether they are.

    python benchmarks/jobs_speed.py [--rounds 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["compare", "--methods", "rigl,set", "--seeds", "0,1", "--preset", "quick", "--quiet"]


def _table(text: str) -> list[list[str]]:
    """Table rows without the update-time column (wall-clock, the only one allowed to differ)."""
    rows = [line.split("|") for line in text.splitlines() if line.startswith("|")]
    header = rows[0]
    drop = {i for i, cell in enumerate(header) if "time" in cell}
    return [[c for i, c in enumerate(row) if i not in drop] for row in rows]


def _grid(jobs: int, folder: Path, epochs: int) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dstbench", *GRID, "--epochs", str(epochs), "--jobs", str(jobs), "--out", str(folder)],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )
    return time.perf_counter() - start, _table(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, list[list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
                seconds, tables[jobs] = _grid(jobs, Path(tmp) / f"r{r}_j{jobs}", args.epochs)
                times[jobs].append(seconds)
                print(f"round {r + 1}: --jobs {jobs}: {seconds:.1f}s", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"4-run grid, {args.epochs} epochs, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print(f"--jobs 1 median {one:.1f}s, --jobs 2 median {two:.1f}s, jobs2 / jobs1: {two / one:.3f}")
    print("tables identical (without wall-clock columns):", tables[1] == tables[2])


if __name__ == "__main__":
    main()
