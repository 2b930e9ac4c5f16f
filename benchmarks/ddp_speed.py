"""DDP step time with 2 CPU processes (gloo) against 1 process, same global batch, side by side.

Both train the same run (quick preset, ``--batch-size 64`` global) from scratch; the 2-process run
goes through ``torchrun --nproc-per-node 2 -m dstbench train``. The step time is the run's own
``train_seconds`` over its steps (start-up, data loading and evaluation excluded); the order of the
two alternates between rounds; the ratio is of medians. On a machine with fewer free cores than
ranks the ratio says more about the load than about DDP: the script prints the load.

    python benchmarks/ddp_speed.py [--rounds 2] [--epochs 2] [--model tiny_cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(procs: int, folder: Path, args: argparse.Namespace) -> float:
    train = ["train", "--device", "cpu", "--preset", "quick", "--method", "rigl", "--epochs", str(args.epochs),
             "--model", args.model, "--batch-size", "64", "--out", str(folder), "--quiet"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "dstbench", *train], check=True, capture_output=True, env=env)
    summary = json.loads((folder / "summary.json").read_text())
    return float(summary["train_seconds"]) / (summary["steps_per_epoch"] * summary["epochs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="tiny_cnn")
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
                step = _run(procs, Path(tmp) / f"r{r}_p{procs}", args)
                times[procs].append(step)
                print(f"round {r + 1}: {procs} process(es): {step * 1e3:.1f} ms/step", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{args.model}, global batch 64, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, 1 thread per process")
    print(f"1 process {one * 1e3:.1f} ms/step, 2 processes (gloo) {two * 1e3:.1f} ms/step, ratio {two / one:.3f}")


if __name__ == "__main__":
    main()
