"""The ``shrink`` backend: a smaller dense network without the channels a mask makes dead.

An output channel of a Conv2d/Linear ("producer") can leave the network when the graph lets us follow
it to exactly one consumer layer through channel-wise operations only (BatchNorm, ReLU, pooling,
dropout, and a flatten of a 1x1 map) and either

* the consumer reads none of it (its mask's column block for the channel is empty), or
* the producer's mask row is empty (and its bias is 0), so the channel carries the constant
  ``v = act(BN(0))``: removable when ``v == 0``, or when the consumer is a Linear or an unpadded conv,
  where ``v`` folds exactly into the consumer's bias. A padded conv sees ``v`` inside and 0 in its
  padding, which no bias reproduces, so such channels stay (and the notes say so).

The graph comes from :func:`torch.fx.symbolic_trace`; a channel feeding a residual addition, a
concatenation or two layers is kept, and the notes count such producers. Inference (eval-mode
BatchNorm) is what this computes; it proves input gradients like any dense network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from dstbench.speed.backends import Backend, BackendUnavailable, Prepared, masked_layers, register_backend

__all__ = ["ShrinkBackend", "Chain", "find_chains"]

_LAYERS = (nn.Conv2d, nn.Linear)
_PASS_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout}
_FLATTEN = {torch.flatten, "flatten", "view", "reshape"}


@dataclass
class Chain:
    """producer -> channel-wise ops (``norms`` among them) -> consumer, along one path of the graph."""

    producer: str
    consumer: str
    norms: list[str]
    relu: bool


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _spatial_one(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and len(meta.shape) >= 2 and int(torch.Size(meta.shape[2:]).numel()) == 1


def _step(gm: fx.GraphModule, node: fx.Node, chain: Chain) -> str:
    """Classify ``node``: 'consumer', 'pass' (updating ``chain``) or 'stop'."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, _LAYERS) and getattr(module, "groups", 1) == 1:
            chain.consumer = str(node.target)
            return "consumer"
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            chain.norms.append(str(node.target))
            return "pass"
        if isinstance(module, nn.ReLU):
            chain.relu = True
        if isinstance(module, nn.Flatten):
            return "pass" if _spatial_one(node.args[0]) else "stop"  # type: ignore[arg-type]
        return "pass" if isinstance(module, _PASS_MODULES) else "stop"
    if node.op in ("call_function", "call_method"):
        if node.target in (F.relu, torch.relu, "relu"):
            chain.relu = True
            return "pass"
        if node.target in _PASS_FUNCTIONS:
            return "pass"
        if node.target in _FLATTEN:
            return "pass" if _spatial_one(node.args[0]) else "stop"  # type: ignore[arg-type]
    return "stop"


def find_chains(model: nn.Module, example: torch.Tensor) -> tuple[list[Chain], dict[str, str]]:
    """The shrinkable producer->consumer chains, and for every other masked layer why it is not one."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on untraceable Python
        raise BackendUnavailable(f"backend shrink: torch.fx cannot trace the model: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    ShapeProp(gm).propagate(example[:1])
    chains, blocked = [], {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(str(node.target)), _LAYERS):
            continue
        chain, current, verdict = Chain(str(node.target), "", [], False), node, "stop"
        while (nxt := _single_user(current)) is not None:
            verdict = _step(gm, nxt, chain)
            if verdict != "pass":
                break
            current = nxt
        if verdict == "consumer":
            chains.append(chain)
        elif not any(user.op == "output" for user in current.users):  # the network's output is no loss
            stop = _single_user(current)
            blocked[chain.producer] = f"output feeds {stop.target if stop is not None else 'several nodes'}"
    return chains, blocked


def _constant(model: nn.Module, chain: Chain, channels: int) -> torch.Tensor:
    """``act(BN(0))`` per channel: what an empty producer channel carries to the consumer."""
    value = torch.zeros(1, channels)
    for name in chain.norms:
        bn: Any = model.get_submodule(name)
        value = F.batch_norm(value, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return value.relu()[0] if chain.relu else value[0]


def _shrink(model: nn.Module, chain: Chain) -> tuple[int, int, int]:
    """Apply one chain in place; returns (removed, channels, kept because of padding)."""
    producer: Any = model.get_submodule(chain.producer)
    consumer: Any = model.get_submodule(chain.consumer)
    weight = producer.weight * getattr(producer, "weight_mask", 1)
    channels = weight.shape[0]
    empty = weight.reshape(channels, -1).eq(0).all(dim=1)
    if producer.bias is not None:
        empty &= producer.bias.eq(0)
    cweight = consumer.weight * getattr(consumer, "weight_mask", 1)
    if cweight.shape[1] != channels:
        return 0, channels, 0
    unread = cweight.transpose(0, 1).reshape(channels, -1).eq(0).all(dim=1)
    value = _constant(model, chain, channels)
    foldable = isinstance(consumer, nn.Linear) or tuple(consumer.padding) == (0, 0)
    fold = empty & ~unread & (value != 0)
    removable = unread | (empty & (value == 0)) | (fold if foldable else torch.zeros_like(fold))
    if bool(removable.all()):  # torch has no zero-channel conv: one channel stays (its weights may be 0)
        removable[0] = False
    kept_by_padding = int((fold & ~removable).sum())
    fold &= removable
    if fold.any():
        extra = (cweight.reshape(cweight.shape[0], channels, -1).sum(dim=2) * (value * fold)).sum(dim=1)
        bias = consumer.bias if consumer.bias is not None else torch.zeros(cweight.shape[0])
        consumer.bias = nn.Parameter((bias + extra).detach())
    keep = ~removable
    _cut(producer, keep, dim=0)
    for name in chain.norms:
        _cut_norm(model.get_submodule(name), keep)
    _cut(consumer, keep, dim=1)
    return int(removable.sum()), channels, kept_by_padding


def _cut(layer: Any, keep: torch.Tensor, dim: int) -> None:
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight.index_select(dim, keep.nonzero()[:, 0]).clone())
        if isinstance(getattr(layer, "weight_mask", None), torch.Tensor):
            layer.weight_mask = layer.weight_mask.index_select(dim, keep.nonzero()[:, 0]).clone()
        if dim == 0 and layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[keep].clone())
    size = int(keep.sum())
    attr = ("out_channels", "out_features") if dim == 0 else ("in_channels", "in_features")
    setattr(layer, attr[0] if isinstance(layer, nn.Conv2d) else attr[1], size)


def _cut_norm(bn: Any, keep: torch.Tensor) -> None:
    with torch.no_grad():
        for attr in ("weight", "bias"):
            if getattr(bn, attr) is not None:
                setattr(bn, attr, nn.Parameter(getattr(bn, attr)[keep].clone()))
        for attr in ("running_mean", "running_var"):
            if getattr(bn, attr) is not None:
                setattr(bn, attr, getattr(bn, attr)[keep].clone())
    bn.num_features = int(keep.sum())


class ShrinkBackend(Backend):
    """Drop dead channels (see the module doc); a smaller dense network that runs everywhere."""

    name = "shrink"
    supports_backward = True
    tolerance = 1e-5

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        out = copy.deepcopy(model).eval()
        with torch.no_grad():
            for _, module in masked_layers(out):
                getattr(module, "weight").mul_(getattr(module, "weight_mask"))
        chains, blocked = find_chains(out, example)
        removed = total = padded = 0
        for chain in chains:
            gone, channels, kept = _shrink(out, chain)
            removed, total, padded = removed + gone, total + channels, padded + kept
        notes = [f"shrink: removed {removed} of {total} channels in {len(chains)} producer->consumer chains"]
        if padded:
            notes.append(f"shrink: kept {padded} empty channels whose BN constant a padded conv cannot fold")
        if blocked:
            notes.append(f"shrink: {len(blocked)} layers not shrinkable (e.g. {next(iter(blocked))}: {next(iter(blocked.values()))})")
        return Prepared(out, notes)


register_backend("shrink", ShrinkBackend)
