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
from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401  (registers the CIFAR models)
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.structured_select import structured_topk
from dstbench.core.structures import parse_structure
from dstbench.speed import get_backend, prove
from dstbench.speed.timing import cpu_model, time_interleaved


def layer_shapes(name: str) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(layer name, module, input shape at batch 1) for each distinct layer configuration."""
    model = timm.create_model(name, num_classes=10).eval()
    seen: dict[str, tuple[str, nn.Module, tuple[int, ...]]] = {}
    hooks = []
    for layer_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(m: nn.Module, args: tuple[torch.Tensor, ...], n: str = layer_name) -> None:
                key = f"{m}{tuple(args[0].shape[1:])}"
                seen.setdefault(key, (n, m, tuple(args[0].shape[1:])))
            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for handle in hooks:
        handle.remove()
    return list(seen.values())


def _mask(module: nn.Module, density: float, structure: str, gen: torch.Generator) -> torch.Tensor:
    weight = module.weight
    out = weight.shape[0]
    if structure == "channel":
        mask = torch.zeros_like(weight, dtype=torch.bool)
        mask[: max(1, round(density * out))] = True
        return mask
    if structure == "nm24":
        return structured_topk(torch.rand(weight.shape, generator=gen), parse_structure("nm:2:4"), weight.numel() // 2)
    if structure == "block4":
        matrix = weight.reshape(out, -1)
        tiles = torch.rand(out // 4, matrix.shape[1] // 4, generator=gen) < density
        return tiles.repeat_interleave(4, 0).repeat_interleave(4, 1).reshape(weight.shape)
    flat = torch.zeros(weight.numel(), dtype=torch.bool)
    flat[torch.randperm(weight.numel(), generator=gen)[: max(1, round(density * weight.numel()))]] = True
    return flat.reshape(weight.shape)


def _shrunk(module: nn.Module, mask: torch.Tensor) -> nn.Module:
    """The layer with only its kept output channels (what ``shrink`` leaves of a channel-masked layer)."""
    keep = mask.reshape(mask.shape[0], -1).any(dim=1)
    small = type(module).__new__(type(module))
    small.__dict__ = dict(module.__dict__)
    small._parameters = {"weight": nn.Parameter((module.weight * mask)[keep].clone()), "bias": None}
    setattr(small, "out_channels" if isinstance(module, nn.Conv2d) else "out_features", int(keep.sum()))
    return small


def time_layer(module: nn.Module, shape: tuple[int, ...], density: float, structure: str, args: argparse.Namespace) -> dict[str, float]:
    """Speedup over masked of this structure's backend on one layer (proved first)."""
    gen = torch.Generator().manual_seed(0)
    layer = nn.Sequential(_copy(module))
    rows, cols = module.weight.shape[0], module.weight[0].numel()
    if structure == "block4" and (rows % 4 or cols % 4):
        return {}  # no 4x4 tiling (the RGB stem, the 10-class head)
    if structure == "nm24" and module.weight.shape[1] % 4:
        return {}  # no groups of 4 input channels (the RGB stem)
    mask = _mask(module, density, structure, gen)
    layer[0].register_buffer("weight_mask", mask)
    x = torch.randn(args.batch, *shape)
    masked = get_backend("masked").prepare(layer, x).model
    if structure == "channel":
        small = _shrunk(layer[0], mask)
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x)[:, : int(mask.reshape(mask.shape[0], -1).any(1).sum())], rtol=0, atol=1e-5)
        fns: dict[str, Callable[[], Any]] = {"masked": lambda: masked(x), "shrink": lambda: small(x)}
        flops = mask.shape[0] / int(mask.reshape(mask.shape[0], -1).any(1).sum())
    else:
        backend = get_backend("bsr" if structure == "block4" else "csr")
        other = backend.prepare(layer, x).model
        prove(backend, masked, other, x)
        fns = {"masked": lambda: masked(x), backend.name: lambda: other(x)}
        flops = 2.0 if structure == "nm24" else 1.0 / density
    seconds = time_interleaved(fns, torch.device("cpu"), args.threads, args.rounds, args.min_time)
    name = next(key for key in fns if key != "masked")
    return {"speedup": seconds["masked"] / seconds[name], "flop_ratio": flops, "masked_ms": seconds["masked"] * 1e3}


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


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
                        result = time_layer(module, shape, plan.target(name).density, structure, args)
                        if result:
                            cells.append(f"{name}:{result['speedup']:.2f}" + (f"/{result['flop_ratio']:.1f}" if structure == "channel" else ""))
                    print(f"{model_name} {dist} {sparsity:.2f} {structure:12s} " + " ".join(cells), flush=True)
        for keep in (float(k) for k in args.channel_keep.split(",") if k):
            print(channel_end_to_end(model_name, keep, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
