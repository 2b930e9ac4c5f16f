"""Execution backends: one contract, a small registry, and the proof every backend owes before timing.

A backend changes *how* a masked network is computed, never *what*: it takes a model whose prunable
layers carry a boolean ``weight_mask`` (the engine's contract, :mod:`dstbench.engine.sparse_engine`) and
returns a model that computes the same outputs. :func:`prove` checks that claim on real inputs against
the ``masked`` baseline (a dense kernel on ``W * M``) before any time counts.

A backend that cannot serve a mask or a device raises :class:`BackendUnavailable` with one line; it
never falls back silently to another kernel. Layers a backend deliberately leaves dense (the plan's
dense layers) are listed in :attr:`Prepared.notes`, so a reader sees what was and was not converted.

Adding a kernel is writing a :class:`Backend` and calling :func:`register_backend`, as a method is added
with :func:`dstbench.core.registry.register`; section 4 of the design (training with a backend) builds
on :attr:`Backend.supports_backward` and :meth:`Backend.prepare` unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from dstbench.core.errors import DstbenchError

__all__ = [
    "Backend", "LayerBackend", "Prepared", "Proof", "BackendUnavailable", "BackendMismatch",
    "register_backend", "get_backend", "backend_names", "masked_layers", "prove", "set_module",
]  # fmt: skip


class BackendUnavailable(DstbenchError):
    """A backend does not apply to this mask, layer or device (said in one line, never a fallback)."""


class BackendMismatch(DstbenchError):
    """A backend's output differs from ``masked`` beyond its stated tolerance: its times do not count."""


@dataclass
class Prepared:
    """A backend's model, and what it did not convert (or could not shrink) and why."""

    model: nn.Module
    notes: list[str] = field(default_factory=list)


class Backend:
    """The contract. ``prepare`` builds the backend's model from a masked model (which it must not
    modify); ``tolerance`` is the relative error :func:`prove` accepts (max |y - y_ref| over
    max |y_ref|), stated per backend because sparse kernels sum in another order than dense ones."""

    name: str = ""
    supports_backward: bool = False
    tolerance: float = 1e-5
    supports_training: bool = False
    """Whether ``train --backend NAME`` can use it (:mod:`dstbench.speed.training`): a backward with
    weight gradients, and a format rebuilt whenever the engine changes a mask."""

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        raise NotImplementedError

    def check_device(self, device: torch.device) -> None:
        """Raise :class:`BackendUnavailable` (one line) when this backend cannot run on ``device`` at all."""

    def train_layer(self, name: str, module: nn.Module) -> None:
        """Make ``module`` (a masked Conv2d/Linear being trained) compute with this backend's kernels,
        in place: its parameters, mask and name stay the ones the engine and the optimizer hold."""
        raise BackendUnavailable(f"backend {self.name} has no training kernels")


class LayerBackend(Backend):
    """A backend that replaces each masked Conv2d/Linear by a module of its own, one layer at a time.

    Layers whose mask keeps every weight (the plan's dense layers) stay dense kernels and are named in
    the notes: converting a full mask to a sparse format only makes it slower."""

    def check(self, name: str, module: nn.Module, device: torch.device) -> None:
        """Raise :class:`BackendUnavailable` (one line) when this layer cannot be served."""

    def convert(self, module: nn.Module) -> nn.Module:
        raise NotImplementedError

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        out = copy.deepcopy(model)
        kept: list[str] = []
        for name, module in list(masked_layers(out)):
            if bool(getattr(module, "weight_mask").all()):
                kept.append(name)
                continue
            self.check(name, module, example.device)
            set_module(out, name, self.convert(module))
        notes = [f"{self.name}: {len(kept)} layers the plan leaves dense stay dense kernels ({', '.join(kept)})"] if kept else []
        return Prepared(out, notes)


_REGISTRY: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make a backend available to ``dstbench speed --backend NAME`` and the benchmarks."""
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise DstbenchError(f"unknown backend {name!r}; valid choices: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def masked_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The Conv2d/Linear modules carrying a ``weight_mask`` buffer, by qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and isinstance(getattr(module, "weight_mask", None), torch.Tensor):
            yield name, module


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@dataclass(frozen=True)
class Proof:
    """How far a backend's outputs (and gradients, where it has a backward) are from ``masked``."""

    backend: str
    forward_error: float
    input_grad_error: float | None
    tolerance: float

    def as_dict(self) -> dict[str, object]:
        return {"forward_rel_error": self.forward_error, "input_grad_rel_error": self.input_grad_error, "tolerance": self.tolerance}


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.abs().max()) or 1.0
    return float((value.float() - reference.float()).abs().max()) / scale


def prove(backend: Backend, reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor) -> Proof:
    """Compare ``candidate`` with the masked ``reference`` on ``inputs``; raise when beyond tolerance.

    Forward always; the input gradient too when the backend supports backward (weight gradients are
    the layer tests' business, where the weights line up one to one)."""
    with torch.no_grad():
        forward = _relative(candidate(inputs), reference(inputs))
    grad_error: float | None = None
    if backend.supports_backward:
        grads = []
        for net in (reference, candidate):
            x = inputs.detach().clone().requires_grad_(True)
            net(x).square().sum().backward()
            grads.append(x.grad)
        grad_error = _relative(grads[1], grads[0])  # type: ignore[arg-type]
    proof = Proof(backend.name, forward, grad_error, backend.tolerance)
    worst = max(forward, grad_error or 0.0)
    if not worst <= backend.tolerance:
        raise BackendMismatch(
            f"backend {backend.name} differs from masked by {worst:.3g} (relative) > tolerance {backend.tolerance:g}; its times do not count"
        )
    return proof
