"""BiDST's training cost against RigL and static sparse training: measured wall time and predicted FLOPs.

1. **Wall time per training step** (CPU): one fixed batch, a step of each method in rotated order,
   no topology update inside the timed steps; medians and ratios to static.
2. **Wall time per epoch** (CPU). Each repetition trains ``static``, ``rigl`` and ``bidst`` with the real
   trainer on the same data subset, in a rotated order, so machine noise hits all three alike; the
   script prints each method's median ``epoch_seconds`` (training loop only, no evaluation) and its
   ratio to static. In this PyTorch emulation every method already computes the dense weight gradient
   (masking happens after backward), so the time difference is BiDST's per-step work proper: the score
   update on M | S and the eq.-10 lambda term, plus its rare topology updates.
3. **Predicted training FLOPs** (RigL App. H convention, :mod:`dstbench.engine.cost`):
   BiDST pays ``2 f_A + f_(A|S)`` per sample because it needs G on the search space too, against
   ``3 f_A`` for static sparse training: about +16.7 % at s = 0.9, S = 0.05 under uniform sparsity.
   The FLOP ratio is printed for the benchmark's distribution and for uniform sparsity.

Usage (a small subset of the real CIFAR-10 archive; decoded once into $DSTBENCH_CACHE)::

    DSTBENCH_CACHE=/tmp/dstcache python benchmarks/bidst_overhead.py \\
        --data-dir /work/shared/data/cifar10-jpeg.tar.gz [--repeats 3] [--train-samples 1024] [--threads 1]

On a shared machine pass ``--threads 1``: with more threads than idle cores, every parallel kernel
waits for descheduled threads and the timings measure the neighbours, not the methods.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401  (registers the CIFAR models with timm)
from dstbench.engine.cost import count_forward_flops, predict_flops
from dstbench.config import TrainConfig, resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.train.loop import train

METHODS = ("static", "rigl", "bidst")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", help="CIFAR-10 archive or folder (omit for synthetic data)")
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--distribution", default="erk")
    parser.add_argument("--train-samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rigl-delta-t", type=int, default=4, help="RigL update interval in steps")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    return parser.parse_args()


def method_hp(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Cadences scaled to the short run: RigL updates a few times, BiDST at every epoch start."""
    return {"rigl": {"delta_t": args.rigl_delta_t}, "bidst": {"update_frequency": 1}}.get(method, {})


def run_config(method: str, args: argparse.Namespace, out: str) -> TrainConfig:
    fields: dict[str, Any] = {
        "method": method,
        "model": args.model,
        "sparsity": args.sparsity,
        "distribution": args.distribution,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_test_samples": 128,
        "num_workers": 0,
        "out": out,
    }
    if args.data_dir:
        fields.update(dataset="cifar10", data_dir=args.data_dir, max_train_samples=args.train_samples)
    else:
        fields.update(dataset="synthetic", synthetic_train_samples=args.train_samples, synthetic_test_samples=128)
    return resolve_config(overrides=fields, hp=method_hp(method, args))


Batch = tuple[torch.Tensor, torch.Tensor]


def step_function(method: str, args: argparse.Namespace, batch: Batch) -> Callable[[int], None]:
    """One training step of ``method`` through the engine; its schedule never fires in the timed range."""
    model = timm.create_model(args.model, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    plan = plan_sparsity(describe_layers(model), args.sparsity, args.distribution)
    hp = {"rigl": {"delta_t": 10**9}, "bidst": {"update_frequency": 10**6}}.get(method, {})
    engine = SparseEngine(model, plan, create_updater(method, hp), optimizer, steps_per_epoch=10**6, total_epochs=2)
    engine.loss_fn = nn.functional.cross_entropy
    engine.initialize()

    def step(index: int) -> None:
        nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
        engine.step(index, batch)
        optimizer.zero_grad(set_to_none=True)
        assert not engine.records, "a topology update fell inside the timed steps"

    return step


def measure_steps(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of one training step per method, steps interleaved in rotated order."""
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, 3, 32, 32, generator=generator), torch.randint(0, 10, (args.batch_size,)))
    steps = {method: step_function(method, args, batch) for method in METHODS}
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for index in range(1, args.steps + 3):
        shift = index % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            start = time.perf_counter()
            steps[method](index)
            if index > 2:  # the first two steps warm the allocator and the kernels up
                times[method].append(time.perf_counter() - start)
    return {method: statistics.median(values) for method, values in times.items()}


def measure_epochs(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Per method: every epoch's training-loop seconds, and each run's update seconds and count."""
    times: dict[str, dict[str, list[float]]] = {m: {"epoch": [], "update": [], "updates": []} for m in METHODS}
    with tempfile.TemporaryDirectory() as out:  # untimed: data cache, allocator and kernel warm-up
        train(run_config("static", args, out), progress=False)
    for repeat in range(args.repeats):
        shift = repeat % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            with tempfile.TemporaryDirectory() as out:
                train(run_config(method, args, out), progress=False)
                rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
            times[method]["epoch"] += [row["epoch_seconds"] for row in rows]
            times[method]["update"].append(sum(row["update_seconds"] for row in rows))
            times[method]["updates"].append(float(rows[-1]["topology_updates"]))
    return times


def bidst_flop_ratio(model_name: str, sparsity: float, distribution: str) -> tuple[float, float, float]:
    """(f_A / f_D, f_(A|S) / f_D, (2 f_A + f_(A|S)) / 3 f_A) for BiDST's default search space."""
    model = timm.create_model(model_name, num_classes=10)
    forward = count_forward_flops(model, 32)
    plan = plan_sparsity(describe_layers(model), sparsity, distribution)
    updater = create_updater("bidst")
    SparseEngine(model, plan, updater, None)  # setup(): the method sizes its search space per layer
    active = forward.at({t.name: t.active / t.numel for t in plan.targets})
    searched = forward.at(updater.needs.gradient_density or {})
    return active / forward.dense, searched / forward.dense, (2 * active + searched) / (3 * active)


def predicted_training_flops(args: argparse.Namespace) -> dict[str, float]:
    """Training FLOPs of this benchmark's runs by the accountant, per method."""
    result = {}
    for method in METHODS:
        model = timm.create_model(args.model, num_classes=10)
        forward = count_forward_flops(model, 32)
        plan = plan_sparsity(describe_layers(model), args.sparsity, args.distribution)
        updater = create_updater(method, method_hp(method, args))
        cost = predict_flops(
            forward,
            model,
            plan,
            updater,
            epochs=args.epochs,
            train_samples=args.train_samples,
            batch_size=args.batch_size,
            input_size=32,
        )
        result[method] = float(cost["train_flops"])
    return result


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{args.model}, {args.sparsity:g} {args.distribution}, {args.train_samples} samples, batch "
        f"{args.batch_size}, {args.epochs} epochs x {args.repeats} repeats, {torch.get_num_threads()} threads"
    )
    for distribution in dict.fromkeys([args.distribution, "uniform"]):
        f_a, f_p, ratio = bidst_flop_ratio(args.model, args.sparsity, distribution)
        print(
            f"predicted BiDST/static FLOPs per step ({distribution}): f_A = {f_a:.4f} f_D, "
            f"f_(A|S) = {f_p:.4f} f_D, (2 f_A + f_(A|S)) / 3 f_A = {ratio:.4f}"
        )
    flops = predicted_training_flops(args)
    step_times = measure_steps(args)
    print(f"{'method':8s} {'step ms (median)':>17s} {'vs static':>10s}   ({args.steps} steps each, no topology update)")
    for method in METHODS:
        print(f"{method:8s} {1000 * step_times[method]:17.1f} {step_times[method] / step_times['static']:10.3f}")
    times = measure_epochs(args)
    static_epoch = statistics.median(times["static"]["epoch"])
    header = ("epoch s (median)", "vs static", "updates/run", "ms/update", "FLOPs vs static")
    print(f"{'method':8s} {header[0]:>17s} {header[1]:>10s} {header[2]:>12s} {header[3]:>10s} {header[4]:>16s}")
    for method in METHODS:
        epoch = statistics.median(times[method]["epoch"])
        updates = sum(times[method]["updates"])
        per_update = 1000 * sum(times[method]["update"]) / updates if updates else 0.0
        print(
            f"{method:8s} {epoch:17.3f} {epoch / static_epoch:10.3f} {updates / args.repeats:12.0f} "
            f"{per_update:10.1f} {flops[method] / flops['static']:16.4f}"
        )


if __name__ == "__main__":
    main()
