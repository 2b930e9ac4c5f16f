"""Engine overhead on ResNet-32 (CPU), measured side by side in one process.

Prints two ratios:

1. a masked RigL training step (no topology update) against a plain dense PyTorch step: the cost of
   the engine's bookkeeping (gradient masking, re-masking weights and momentum). Target <= 1.03;
2. one RigL topology update (dense-gradient stash, scores, exact top-k, re-masking, records) against
   one training step.

Steps alternate dense/sparse so machine noise hits both alike; medians over many repetitions.

    python benchmarks/overhead.py [--batch-size 128] [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    loss_fn = nn.CrossEntropyLoss()

    dense_model = timm.create_model(args.model, num_classes=10)
    dense_opt = _sgd(dense_model)

    sparse_model = timm.create_model(args.model, num_classes=10)
    sparse_opt = _sgd(sparse_model)
    rigl = create_updater("rigl", {"delta_t": 1_000_000_000, "t_end": 1.0})
    plan = plan_sparsity(describe_layers(sparse_model), args.sparsity, "erk")
    engine = SparseEngine(sparse_model, plan, rigl, sparse_opt, steps_per_epoch=10**9, total_epochs=1)
    engine.initialize()

    def dense_step() -> None:
        loss_fn(dense_model(x), y).backward()
        dense_opt.step()
        dense_opt.zero_grad(set_to_none=True)

    def sparse_step(step: int) -> None:
        loss_fn(sparse_model(x), y).backward()
        engine.step(step)
        sparse_opt.zero_grad(set_to_none=True)

    for warm in range(1, 4):  # allocator and kernel warm-up; step 0 would be a RigL update
        dense_step()
        sparse_step(warm)

    dense_times, sparse_times = [], []
    for i in range(args.repeats):
        step = 10 + i
        order = [("dense", dense_step), ("sparse", lambda: sparse_step(step))]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            (dense_times if name == "dense" else sparse_times).append(time.perf_counter() - start)
    assert not engine.records, "no topology update may fall inside the timed steps"

    # Topology updates through the real path: an update step with the dense-gradient stash.
    rigl.delta_t = 1
    update_base = 10_000
    for i in range(args.updates):
        sparse_step(update_base + i)
    update_times = [record.seconds for record in engine.records]
    assert len(update_times) == args.updates and not engine.violations()

    dense_median = statistics.median(dense_times)
    sparse_median = statistics.median(sparse_times)
    update_median = statistics.median(update_times)
    print(f"model {args.model}, batch {args.batch_size}, sparsity {args.sparsity} (ERK), threads {torch.get_num_threads()}")
    print(f"dense step   median {1000 * dense_median:8.2f} ms over {args.repeats}")
    print(f"sparse step  median {1000 * sparse_median:8.2f} ms over {args.repeats} (RigL, no update)")
    print(f"mask update  median {1000 * update_median:8.2f} ms over {args.updates}")
    print(f"ratio masked RigL step / dense step:  {sparse_median / dense_median:.3f}  (target <= 1.03)")
    print(f"ratio one RigL mask update / one step: {update_median / sparse_median:.3f}")


if __name__ == "__main__":
    main()
