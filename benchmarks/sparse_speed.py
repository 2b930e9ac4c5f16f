"""Per-layer speedup of each execution backend over ``masked`` on the real CIFAR layer shapes.

For every distinct Conv2d/Linear of ``cifar_vgg19`` and ``cifar_resnet32`` (as registered in
dstbench.models, input 32x32; ResNet-32's repeated blocks are timed once per shape) and every sparsity
and distribution (per-layer densities from dstbench's own planner), it draws a mask per structure,
proves each backend equal to the masked layer on that layer's real input, then times them interleaved
(:mod:`dstbench.speed.timing`) and prints ``masked time / backend time``:

* ``unstructured``: random mask with the plan's exact count; backends ``csr``;
* ``nm24``: 2 of every 4 input channels (the engine's N:M selection, ``nm:2:4``, on random scores:
  density 0.5 whatever the sparsity); backend ``csr``, the only sparse kernel on CPU (PyTorch's
  2:4 ``semi-structured`` kernels need CUDA: ``benchmarks/gpu_check.py``);
* ``block4``: random 4x4 tiles at the same density; backend ``bsr``;
* ``channel``: whole output channels (density x outputs kept); ``shrink`` = a conv with only those
  outputs, beside its removed-FLOP ratio (outputs / kept outputs), which is the most it can give.

Run ``python benchmarks/sparse_speed.py --help``; results are ratios on a shared machine, so read them
with the load and threads the header prints.
"""

from __future__ import annotations

import argparse
import os
import sys

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401  (registers the CIFAR models)
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.speed import get_backend, prove
from dstbench.speed.crossover import LayerTiming, layer_shapes, time_layer
from dstbench.speed.timing import cpu_model, time_interleaved


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the dense kernels the model runs (its weights' shapes, whatever their zeros)."""
    total = 0

    def hook(m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += int(m.weight.numel()) * (int(out[0, 0].numel()) if out.dim() == 4 else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return total


def channel_end_to_end(name: str, keep: float, args: argparse.Namespace) -> str:
    """The whole network with each conv keeping the first ``keep`` of its output channels: masked
    against the proved ``shrink`` model, beside the removed-FLOP ratio."""
    model = timm.create_model(name, num_classes=10).eval()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            mask = torch.zeros_like(module.weight, dtype=torch.bool)
            mask[: max(1, round(keep * module.weight.shape[0]))] = True
            module.register_buffer("weight_mask", mask)
    x = torch.randn(args.batch, 3, 32, 32)
    masked = get_backend("masked").prepare(model, x).model
    backend = get_backend("shrink")
    shrunk = backend.prepare(model, x)
    prove(backend, masked, shrunk.model, x)
    seconds = time_interleaved({"masked": lambda: masked(x), "shrink": lambda: shrunk.model(x)}, torch.device("cpu"), args.threads, args.rounds, args.min_time)
    ratio = _flops(masked, x) / _flops(shrunk.model, x)
    speedup = seconds["masked"] / seconds["shrink"]
    return (f"{name} channel keep {keep:.2f}: shrink {speedup:.2f}x over masked ({seconds['masked'] * 1e3:.2f} -> "
            f"{seconds['shrink'] * 1e3:.2f} ms), removed-FLOP ratio {ratio:.2f}x, speedup/ratio {speedup / ratio:.2f}; {'; '.join(shrunk.notes)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cifar_vgg19,cifar_resnet32")
    parser.add_argument("--sparsities", default="0.9,0.95,0.98,0.99")
    parser.add_argument("--distributions", default="uniform,erk")
    parser.add_argument("--structures", default="unstructured,nm24,block4,channel")
    parser.add_argument("--batch", type=int, default=1, help="input batch (1: latency; the training batch: throughput)")
    parser.add_argument("--threads", type=int, default=1, help=f"torch threads (this machine has {os.cpu_count()})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--channel-keep", default="", help="also time whole networks with channel masks keeping these fractions, e.g. 0.5,0.25")
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timing = LayerTiming(args.batch, args.threads, args.rounds, args.min_time)
    load = os.getloadavg()
    print(f"# torch {torch.__version__}, {cpu_model()}, {args.threads} thread(s), batch {args.batch}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("# speedup = masked time / backend time per layer, interleaved; flop = dense FLOPs / kept FLOPs")
    for model_name in args.models.split(","):
        shapes = layer_shapes(model_name)
        model = timm.create_model(model_name, num_classes=10)
        for dist in args.distributions.split(","):
            for sparsity in (float(s) for s in args.sparsities.split(",")):
                plan = plan_sparsity(describe_layers(model), sparsity, dist)
                for structure in args.structures.split(","):
                    cells = []
                    for name, module, shape in shapes:
                        result = time_layer(module, shape, plan.target(name).density, structure, timing)
                        if result:
                            cells.append(f"{name}:{result['speedup']:.2f}" + (f"/{result['flop_ratio']:.1f}" if structure == "channel" else ""))
                    print(f"{model_name} {dist} {sparsity:.2f} {structure:12s} " + " ".join(cells), flush=True)
        for keep in (float(k) for k in args.channel_keep.split(",") if k):
            print(channel_end_to_end(model_name, keep, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
