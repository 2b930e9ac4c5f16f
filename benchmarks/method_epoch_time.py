"""Per-epoch training time of each DST method relative to static sparse training, side by side.

He et al. ResNet-32 on a class-balanced subset of real CIFAR-10 (default 1024 train / 256 test, batch 128,
2 epochs, 90 % ERK) on the CPU. All methods train in one process, **interleaved step by step**: every
step, each method's model takes the same batch, in an order that rotates from step to step. On a shared
machine the load drifts by a factor of several within minutes; interleaving at the step level makes the
drift hit every method alike, which separate runs (even paired ones) do not.

A method's epoch time is the sum of its step times: forward, backward, the engine's bookkeeping, the
optimizer step and any topology update. It excludes data loading and evaluation, which are the same for
every method. The update cadences are scaled so that every method changes its topology within the run
(RigL and RigL-ITOP several times per epoch). Reported: the fastest epoch, the median over
(repeat, epoch) of the ratio to ``static`` in the same epoch, the topology updates, the seconds spent
in them, and the ITOP rate reached. The fastest epoch stands for the absolute time, being the least
disturbed by other work.

    DSTBENCH_CACHE=/tmp/dstcache python benchmarks/method_epoch_time.py [--repeats 3] [--data-dir PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dstbench.config import TrainConfig, resolve_config
from dstbench.data import build_data
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater, get_method, list_methods
from dstbench.train.loop import build_model, build_optimizer, data_config, lr_at

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


@dataclasses.dataclass
class Run:
    """One method's model, optimizer and engine, stepped by hand like ``dstbench.train.loop.train``."""

    method: str
    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    engine: SparseEngine
    criterion: nn.Module

    def step(self, step: int, total_steps: int, x: torch.Tensor, y: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, 0, self.cfg)
        loss = self.criterion(self.model(x), y)
        loss.backward()
        self.engine.step(step, (x, y))
        self.optimizer.zero_grad(set_to_none=True)


def config(method: str, args: argparse.Namespace) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(get_method(method))}
    return resolve_config(
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
        },
        hp={k: v for k, v in CADENCES.get(method, {}).items() if k in fields},
    )


def build_run(method: str, args: argparse.Namespace, steps_per_epoch: int, num_classes: int, seed: int) -> Run:
    cfg = config(method, args)
    torch.manual_seed(seed)
    updater = create_updater(method, cfg.hp)
    model = build_model(cfg.model, num_classes)
    plan = plan_sparsity(describe_layers(model), cfg.sparsity if updater.needs.sparse else 0.0, cfg.distribution)
    optimizer = build_optimizer(model, cfg)
    engine = SparseEngine(
        model, plan, updater, optimizer, seed=seed, steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs
    )
    criterion = nn.CrossEntropyLoss()
    engine.loss_fn = criterion
    engine.initialize()
    model.train()
    return Run(method, cfg, model, optimizer, engine, criterion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz")
    )
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--train-samples", type=int, default=1024)
    parser.add_argument("--test-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    methods = [m for m in METHODS if m in list_methods()]
    base = config("static", args)
    data = build_data(dataclasses.replace(data_config(base), num_workers=0), torch.device("cpu"))
    steps_per_epoch = len(data.train)
    total_steps = steps_per_epoch * args.epochs
    epoch_seconds: dict[str, list[float]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    runs: list[Run] = []
    print(f"load average before: {os.getloadavg()}  (cpus {os.cpu_count()}, torch threads {torch.get_num_threads()})")
    for repeat in range(args.repeats):
        runs = [build_run(m, args, steps_per_epoch, data.num_classes, seed=repeat) for m in methods]
        for epoch in range(args.epochs):
            data.train.set_epoch(epoch)
            seconds = dict.fromkeys(methods, 0.0)
            for i, (x, y) in enumerate(data.train):
                step = epoch * steps_per_epoch + i
                shift = step % len(runs)
                for run in runs[shift:] + runs[:shift]:
                    start = time.perf_counter()
                    run.step(step, total_steps, x, y)
                    seconds[run.method] += time.perf_counter() - start
            for method in methods:
                epoch_seconds[method].append(seconds[method])
                ratios[method].append(seconds[method] / seconds["static"])
    print(f"load average after:  {os.getloadavg()}")

    print(
        f"\n{args.model}, {args.train_samples} CIFAR-10 images, batch {args.batch_size}, {args.epochs} epochs, "
        f"s={args.sparsity} ERK, {args.repeats} repeats, steps interleaved (ratio: median over repeats x epochs)"
    )
    header = f"{'method':10s} {'min epoch s':>11s} {'vs static':>9s} {'updates':>7s} {'update s/run':>12s} {'itop':>9s}"
    print(header)
    print("-" * len(header))
    for run in runs:
        engine = run.engine
        print(
            f"{run.method:10s} {min(epoch_seconds[run.method]):11.3f} "
            f"{statistics.median(ratios[run.method]):9.3f} {len(engine.records):7d} "
            f"{engine.update_seconds:12.3f} {engine.itop_rate():9.4f}"
        )


if __name__ == "__main__":
    main()
