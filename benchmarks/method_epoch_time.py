"""Per-epoch training time of each DST method relative to static sparse training, side by side.

He et al. ResNet-32 on a class-balanced subset of real CIFAR-10 (default 1024 train / 256 test, batch 128,
2 epochs, 90 % ERK) on the CPU. The update cadences are scaled so that every method changes its topology
within the run (RigL and RigL-ITOP several times per epoch). Each method's run is paired with a
``static`` run right before or after it (the order alternates between repeats, the method order rotates),
and its ratio is the median over repeats of (method epoch time / paired static epoch time). Pairing
cancels the drift of a shared machine's load, which unpaired medians do not. The table also gives the
topology updates, the time spent in them, and the ITOP rate reached.

    DSTBENCH_CACHE=/tmp/dstcache python benchmarks/method_epoch_time.py [--repeats 3] [--data-dir PATH]

Check the load average printed before and after: other work on the machine still adds noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
from collections import defaultdict
from typing import Any

from dstbench.config import resolve_config
from dstbench.registry import get_method, list_methods
from dstbench.trainer import train

METHODS = ["static", "set", "rigl", "rigl-itop", "mest", "mest-ems", "snfs", "bidst"]
# 8 steps per epoch at 1024 samples / batch 128: RigL and ITOP update every 3 steps, the epoch-based
# methods at every epoch they are allowed to.
CADENCES: dict[str, dict[str, Any]] = {
    "rigl": {"delta_t": 3},
    "rigl-itop": {"delta_t": 3},
    "mest": {"update_frequency": 1},
    "mest-ems": {"update_frequency": 1},
    "bidst": {"update_frequency": 1},
}


def run_once(method: str, args: argparse.Namespace, out: str) -> dict[str, Any]:
    """Train one run into ``out`` (its metrics.jsonl holds the per-epoch times) and return its summary."""
    fields = {f.name for f in dataclasses.fields(get_method(method))}
    hp = {k: v for k, v in CADENCES.get(method, {}).items() if k in fields}
    cfg = resolve_config(
        overrides={
            "method": method,
            "model": args.model,
            "dataset": "cifar10",
            "data_dir": args.data_dir,
            "max_train_samples": args.train_samples,
            "max_test_samples": args.test_samples,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "sparsity": args.sparsity,
            "distribution": "erk",
            "num_workers": 0,
            "out": out,
        },
        hp=hp,
    )
    return train(cfg, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", default="/work/shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--train-samples", type=int, default=1024)
    parser.add_argument("--test-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    methods = [m for m in METHODS if m in list_methods()]
    ratios: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    last: dict[str, dict[str, Any]] = {}
    print(f"load average before: {os.getloadavg()}  (cpu count {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            shift = repeat % len(methods)
            for method in (methods[shift:] + methods[:shift]):
                if method == "static":
                    continue
                pair = ["static", method] if repeat % 2 == 0 else [method, "static"]
                epoch = {}
                for name in pair:
                    out = os.path.join(tmp, f"{name}_{method}_{repeat}")
                    last[name] = run_once(name, args, out)
                    with open(os.path.join(out, "metrics.jsonl")) as fh:
                        epoch[name] = statistics.median(json.loads(line)["epoch_seconds"] for line in fh)
                    seconds[name].append(epoch[name])
                ratios[method].append(epoch[method] / epoch["static"])
    print(f"load average after:  {os.getloadavg()}")

    print(
        f"\n{args.model}, {args.train_samples} CIFAR-10 images, batch {args.batch_size}, {args.epochs} epochs, "
        f"s={args.sparsity} ERK, {args.repeats} paired repeats"
    )
    header = f"{'method':10s} {'epoch s':>8s} {'vs static':>9s} {'updates':>7s} {'update s/run':>12s} {'itop_rate':>9s}"
    print(header)
    print("-" * len(header))
    for method in methods:
        ratio = statistics.median(ratios[method]) if method != "static" else 1.0
        s = last[method]
        print(
            f"{method:10s} {statistics.median(seconds[method]):8.3f} {ratio:9.3f} {s['topology_updates']:7d} "
            f"{s['update_seconds']:12.3f} {s['itop_rate']:9.4f}"
        )


if __name__ == "__main__":
    main()
