"""Compiled training step against the eager step, side by side in one process (CPU by default).

Two copies of He's ResNet-32 (``cifar_resnet32``) with identical weights and RigL masks train on the
same batches; steps alternate eager / compiled so machine noise hits both alike; the ratio is of
medians. The compiled copy runs exactly what ``dstbench train --compile`` runs (:class:`FastStep`:
``torch.compile`` of the model and of the sparse optimizer step); the one-off compile time is
reported separately.

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
from dstbench.train.compiled import FastStep, dynamo_counts
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater


def _setup(model: nn.Module, sparsity: float) -> tuple[torch.optim.Optimizer, SparseEngine]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rigl = create_updater("rigl", {"delta_t": 1_000_000_000, "t_end": 1.0})  # no update during timing
    plan = plan_sparsity(describe_layers(model), sparsity, "erk")
    engine = SparseEngine(model, plan, rigl, optimizer, steps_per_epoch=10**9, total_epochs=1)
    engine.initialize()
    return optimizer, engine


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
    eager_opt, eager_engine = _setup(eager_model, args.sparsity)
    fast_opt, fast_engine = _setup(fast_model, args.sparsity)
    loss_fn = nn.CrossEntropyLoss()
    fast = FastStep(fast_model, fast_engine, fast_opt, loss_fn, device, amp=False, cuda_graph=False,
                    grad_accum=1, batch_size=args.batch_size)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def eager_step(step: int) -> None:
        loss_fn(eager_model(x), y).backward()
        eager_engine.step(step, (x, y))
        eager_opt.zero_grad(set_to_none=True)

    def fast_step(step: int) -> None:
        loss_fn(fast.forward_model(x), y).backward()
        if step == 0:  # the trainer's first step is eager too: it creates the momentum buffers
            fast_engine.step(step, (x, y))
        else:
            fast.optimizer_step()
        fast.zero_grad()

    start = time.perf_counter()
    for step in range(3):
        fast_step(step)
        eager_step(step)
    _sync(device)
    compile_seconds = time.perf_counter() - start
    eager_times, fast_times = [], []
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
    problems = fast_engine.violations()
    print("engine invariants after compiled steps:", "ok" if not problems else "; ".join(problems))


if __name__ == "__main__":
    main()
