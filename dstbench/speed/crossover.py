"""Per-layer speedup of each backend over ``masked`` on a model's real layer shapes, against sparsity:
where does each kernel start to win? (the data of ``dstbench plot crossover``, and of
``benchmarks/sparse_speed.py``'s per-layer ratios).

Each distinct Conv2d/Linear of the model (its configuration and input shape: a ResNet's repeated
blocks are timed once) gets a random mask per structure at each density, each backend is proved equal
to the masked layer on that layer's real input, then both are timed interleaved
(:func:`dstbench.speed.timing.time_interleaved`):

* ``csr`` on an unstructured mask with the exact count;
* ``bsr`` on random 4x4 tiles at the same density (layers without a 4x4 tiling are left out);
* ``shrink`` on whole output channels (density x outputs kept): the layer with only those outputs,
  beside its removed-FLOP ratio (outputs / kept outputs), the most it can give.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import nn

from dstbench.core.errors import ConfigError
from dstbench.core.structured_select import structured_topk
from dstbench.core.structures import parse_structure
from dstbench.speed.backends import get_backend, prove
from dstbench.speed.timing import provenance, time_interleaved

__all__ = ["LayerTiming", "STRUCTURES", "layer_shapes", "structured_mask", "shrunk_layer", "time_layer", "crossover", "wins_from"]

STRUCTURES: dict[str, str] = {"csr": "unstructured", "bsr": "block4", "shrink": "channel"}
"""The mask structure each backend is timed on here."""


@dataclass(frozen=True)
class LayerTiming:
    """How one layer is timed: input batch (1: latency), torch threads, interleaved rounds, seconds per round."""

    batch: int = 1
    threads: int = 1
    rounds: int = 2
    min_time: float = 0.05


def layer_shapes(name: str) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(layer name, module, input shape without the batch) for each distinct layer configuration."""
    import dstbench.models  # noqa: F401  (registers the CIFAR models with timm)

    if not timm.is_model(name):
        raise ConfigError(f"unknown model {name!r} (see `dstbench models`)")
    model = timm.create_model(name, num_classes=10).eval()
    size = int(getattr(model, "default_cfg", {}).get("input_size", (3, 32, 32))[-1])  # timm's input size (CIFAR: 32)
    seen: dict[str, tuple[str, nn.Module, tuple[int, ...]]] = {}
    hooks = []
    for layer_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(m: nn.Module, args: tuple[torch.Tensor, ...], n: str = layer_name) -> None:
                seen.setdefault(f"{m}{tuple(args[0].shape[1:])}", (n, m, tuple(args[0].shape[1:])))

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for handle in hooks:
        handle.remove()
    return list(seen.values())


def _weight(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight")
    assert isinstance(weight, torch.Tensor)
    return weight


def structured_mask(module: nn.Module, density: float, structure: str, gen: torch.Generator) -> torch.Tensor:
    """A random mask of ``structure`` (unstructured, nm24, block4, channel) keeping ``density`` of the
    weights (nm24: 2 of every 4 input channels, density 0.5 whatever ``density`` says)."""
    weight = _weight(module)
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


def shrunk_layer(module: nn.Module, mask: torch.Tensor) -> nn.Module:
    """The layer with only its kept output channels (what ``shrink`` leaves of a channel-masked layer)."""
    keep = mask.reshape(mask.shape[0], -1).any(dim=1)
    small = type(module).__new__(type(module))
    small.__dict__ = dict(module.__dict__)
    bias = getattr(module, "bias")
    small._parameters = {
        "weight": nn.Parameter((_weight(module) * mask)[keep].clone()),
        "bias": None if bias is None else nn.Parameter(bias[keep].detach().clone()),
    }
    setattr(small, "out_channels" if isinstance(module, nn.Conv2d) else "out_features", int(keep.sum()))
    return small


def time_layer(module: nn.Module, shape: tuple[int, ...], density: float, structure: str, timing: LayerTiming) -> dict[str, float]:
    """Speedup over masked of this structure's backend on one layer (proved first); {} where the
    structure does not apply (no 4x4 tiling or groups of 4 inputs: the RGB stem, a 10-class head)."""
    gen = torch.Generator().manual_seed(0)
    layer = nn.Sequential(copy.deepcopy(module))
    weight = _weight(module)
    rows, cols = weight.shape[0], weight[0].numel()
    if structure == "block4" and (rows % 4 or cols % 4):
        return {}
    if structure == "nm24" and weight.shape[1] % 4:
        return {}  # no groups of 4 input channels (the RGB stem)
    mask = structured_mask(module, density, structure, gen)
    layer[0].register_buffer("weight_mask", mask)
    x = torch.randn(timing.batch, *shape)
    masked = get_backend("masked").prepare(layer, x).model
    if structure == "channel":
        small = shrunk_layer(layer[0], mask)
        kept = int(mask.reshape(mask.shape[0], -1).any(1).sum())
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x)[:, :kept], rtol=0, atol=1e-5)
        fns: dict[str, Callable[[], Any]] = {"masked": lambda: masked(x), "shrink": lambda: small(x)}
        flops = mask.shape[0] / kept
    else:
        backend = get_backend("bsr" if structure == "block4" else "csr")
        other = backend.prepare(layer, x).model
        prove(backend, masked, other, x)
        fns = {"masked": lambda: masked(x), backend.name: lambda: other(x)}
        flops = weight.numel() / int(mask.sum())
    seconds = time_interleaved(fns, torch.device("cpu"), timing.threads, timing.rounds, timing.min_time)
    name = next(key for key in fns if key != "masked")
    return {"speedup": seconds["masked"] / seconds[name], "flop_ratio": flops, "masked_ms": seconds["masked"] * 1e3}


def wins_from(points: Sequence[dict[str, float]]) -> float | None:
    """The lowest sparsity from which the backend wins (speedup > 1) at every higher sparsity measured;
    None when it does not win at the highest one."""
    first: float | None = None
    for point in sorted(points, key=lambda p: p["sparsity"], reverse=True):
        if point["speedup"] <= 1.0:
            break
        first = point["sparsity"]
    return first


def crossover(model: str, sparsities: Sequence[float], backends: Sequence[str], timing: LayerTiming) -> dict[str, Any]:
    """Per distinct layer and backend: speedup and removed-FLOP ratio at each sparsity, and where it starts to win."""
    unknown = [name for name in backends if name not in STRUCTURES]
    if unknown:
        raise ConfigError(f"crossover times backends {', '.join(STRUCTURES)} per layer, not {unknown[0]!r}")
    torch.set_num_threads(timing.threads)
    layers: dict[str, Any] = {}
    for name, module, shape in layer_shapes(model):
        rows: dict[str, Any] = {}
        for backend in backends:
            points = []
            for sparsity in sorted(sparsities):
                result = time_layer(module, shape, 1.0 - sparsity, STRUCTURES[backend], timing)
                if result:
                    points.append({"sparsity": sparsity, **result})
            if points:
                rows[backend] = {"points": points, "wins_from": wins_from(points)}
        layers[name] = {"weight": list(_weight(module).shape), "input": list(shape), "backends": rows}
    return {"model": model, "batch": timing.batch, "rounds": timing.rounds, "min_time": timing.min_time,
            "provenance": provenance(torch.device("cpu"), timing.threads, torch.float32), "layers": layers}  # fmt: skip
