"""Seconds per epoch of RigL against the methods with per-step work (BiDST, Deep-R, Top-KAST), eager and
``--compile``, side by side in one run (issue 24's goal metric: BiDST's epoch over RigL's under
``--compile``; on a GPU the goal is at most 1.25x).

Each (method, mode) is a real ``dstbench train`` run of the quick preset (tiny CNN, synthetic data,
one thread), so what is timed is what a user runs: the compiled or captured step with the method's
per-step hook inside it. A run's time is the median ``epoch_seconds`` of its epochs after the first
(the first holds the one-off compilation); repeats run the runs in a rotated order, so drifting load
on a shared machine hits every method alike, and the median over repeats is printed.
Deep-R rewires every ``--deep-r-rewire`` steps (default 20, the quick preset's cadence): at its paper
default (after every step) every step is a topology update and none can take the fast path.

    python benchmarks/hook_capture.py [--epochs 3] [--samples 2048] [--repeats 2] [--device cuda --model cifar_resnet32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from dstbench.config import resolve_config
from dstbench.train.loop import train

METHODS = ("rigl", "bidst", "deep-r", "top-kast")
MODES = (("eager", False), ("compile", True))


def epoch_seconds(method: str, compile: bool, args: argparse.Namespace, out: Path) -> float:
    """Median steady-state seconds per epoch of one run."""
    hp = {"rewire_every": args.deep_r_rewire} if method == "deep-r" else {}
    overrides = {
        "method": method, "compile": compile, "epochs": args.epochs, "synthetic_train_samples": args.samples,
        "synthetic_test_samples": 256, "batch_size": args.batch_size, "threads": 1, "out": str(out),
        "device": args.device, "model": args.model,
    }  # fmt: skip
    train(resolve_config("quick", None, overrides, hp), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return statistics.median(row["epoch_seconds"] for row in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--deep-r-rewire", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cuda: the GPU goal (CUDA graph under --compile)")
    parser.add_argument("--model", default="tiny_cnn", help="e.g. cifar_resnet32 on a GPU")
    args = parser.parse_args()
    runs = [(method, mode, on) for method in METHODS for mode, on in MODES]
    times: dict[tuple[str, str], list[float]] = {(m, mode): [] for m, mode, _ in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            shift = repeat % len(runs)
            for i, (method, mode, on) in enumerate(runs[shift:] + runs[:shift]):
                times[method, mode].append(epoch_seconds(method, on, args, Path(tmp) / f"{repeat}-{i}"))
    seconds = {key: statistics.median(values) for key, values in times.items()}
    steps = -(-args.samples // args.batch_size)
    print(f"{args.model} on {args.device}, synthetic, {args.samples} samples, batch {args.batch_size} ({steps} steps/epoch), 1 thread, "
          f"median of epochs 2-{args.epochs}, {args.repeats} repeat(s)")  # fmt: skip
    print(f"{'method':<10} {'eager s/epoch':>14} {'compile s/epoch':>16} {'compile/eager':>14}")
    for method in METHODS:
        eager, fast = seconds[method, "eager"], seconds[method, "compile"]
        print(f"{method:<10} {eager:>14.3f} {fast:>16.3f} {fast / eager:>14.2f}")
    for mode, _ in MODES:
        ratios = ", ".join(f"{m}/rigl {seconds[m, mode] / seconds['rigl', mode]:.2f}x" for m in METHODS[1:])
        print(f"{mode}: {ratios}")


if __name__ == "__main__":
    main()
