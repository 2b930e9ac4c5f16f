"""Compiled training step against the eager step, side by side in one process (CPU by default).

Two copies of He's ResNet-32 (``cifar_resnet32``) with identical weights and RigL masks train on the
same batches; steps alternate eager / compiled so machine noise hits both alike; the ratio is of
medians. Both copies run the trainer's own steppers: the eager copy :class:`EagerStepper`, the
compiled copy exactly what ``dstbench train --compile --no-cuda-graph`` runs (:class:`CompiledStepper`:
``torch.compile`` of the model and of the engine's plain step); the one-off compile time is reported
separately.

    python benchmarks/compile_speed.py [--batch-size 64] [--repeats 20] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401
from dstbench.config import TrainConfig
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.rundir import RunDir
from dstbench.train.compiled import CompiledStepper, dynamo_counts
from dstbench.train.distributed import Platform
from dstbench.train.setup import Training
from dstbench.train.steppers import EagerStepper


def _training(model: nn.Module, args: argparse.Namespace, device: torch.device) -> Training:
    """The parts a stepper uses (no data, no run folder: nothing is read or written)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rigl = create_updater("rigl", {"delta_t": 1_000_000_000, "t_end": 1.0})  # no update during timing
    plan = plan_sparsity(describe_layers(model), args.sparsity, "erk")
    engine = SparseEngine(model, plan, rigl, optimizer, steps_per_epoch=10**9, total_epochs=1)
    engine.initialize()
    cfg = TrainConfig(model=args.model, batch_size=args.batch_size, device=str(device), compile=True, cuda_graph=False)
    return Training(
        cfg=cfg, platform=Platform(device), run=RunDir("unused"), data=None, model=model, forward_model=model,
        plan=plan, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), engine=engine, steps_per_epoch=10**9,
        total_steps=10**9, warmup_steps=0,
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    eager_model = timm.create_model(args.model, num_classes=10).to(device)
    fast_model = copy.deepcopy(eager_model)
    eager = EagerStepper(_training(eager_model, args, device))
    fast = CompiledStepper(_training(fast_model, args, device))  # its first step runs eagerly, as in training
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def eager_step(step: int) -> None:
        eager.step(x, y, step, True)

    def fast_step(step: int) -> None:
        fast.step(x, y, step, True)

    start = time.perf_counter()
    for step in range(3):
        fast_step(step)
        eager_step(step)
    _sync(device)
    compile_seconds = time.perf_counter() - start
    eager_times: list[float] = []
    fast_times: list[float] = []
    for step in range(3, 3 + args.repeats):
        for fn, times in ((eager_step, eager_times), (fast_step, fast_times)):
            _sync(device)
            t0 = time.perf_counter()
            fn(step)
            _sync(device)
            times.append(time.perf_counter() - t0)
    eager_med, fast_med = statistics.median(eager_times), statistics.median(fast_times)
    counts = dynamo_counts()
    print(f"model {args.model}, batch {args.batch_size}, device {device}, threads {torch.get_num_threads()}")
    print(f"warm-up incl. compilation: {compile_seconds:.1f}s; graphs {counts['graphs']}, graph breaks {counts['graph_breaks']}")
    print(f"eager step    median {eager_med * 1e3:8.1f} ms")
    print(f"compiled step median {fast_med * 1e3:8.1f} ms")
    print(f"compiled / eager: {fast_med / eager_med:.3f}")
    problems = fast.engine.violations()
    print("engine invariants after compiled steps:", "ok" if not problems else "; ".join(problems))


if __name__ == "__main__":
    main()
