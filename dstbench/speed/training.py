"""Training with an execution backend (``train --backend csr``): the layers compute with the backend's
kernels, the engine still owns the masks.

* **The layers stay the engine's.** A masked Conv2d/Linear keeps its identity, parameters, ``weight_mask``
  buffer and name (so the optimizer, the engine, ``state_dict`` and checkpoints see the same model);
  only its ``forward`` changes, by switching its class to a subclass, as
  :func:`torch.nn.utils.parametrize.register_parametrization` does.
* **Re-compression follows the mask.** A layer's CSR index arrays (of ``W`` and of ``W^T``) are built
  from its mask and rebuilt at the first forward after the engine writes the mask (an update installs
  masks with ``copy_``, a resume loads them: both bump the buffer's version counter). That rebuild is
  the re-compression a mask update costs; :class:`TrainingKernels` counts and times it. Weights change
  every step, so their values are gathered into the fixed pattern at every forward.
* **Backward.** The input gradient is ``W^T g`` through the CSR of the transpose; the weight gradient is
  computed at the mask's entries only (``torch.sparse.sampled_addmm``), except on the steps where the
  engine reads dense gradients (:func:`needs_dense_grad`): RigL's update steps, every step of methods
  with dense gradients, per-step hooks or a backward set. Off the mask, the sampled gradient is 0,
  which is what the engine's gradient masking makes of ``masked``'s dense gradient: both backends
  give the optimizer the same numbers up to the order of float sums.
* A layer whose mask keeps every weight (the plan's dense layers) runs its dense kernel.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from dstbench.core.errors import ConfigError
from dstbench.core.layers import find_prunable_layers
from dstbench.core.needs import Needs
from dstbench.speed.backends import Backend, BackendUnavailable, backend_names, get_backend
from dstbench.speed.gemm import col2im, im2col

__all__ = ["CsrPattern", "TrainingKernels", "check_training", "attach", "make_csr_trainable", "needs_dense_grad"]


def _crow(counts: torch.Tensor) -> torch.Tensor:
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class CsrPattern:
    """A layer's sparsity pattern in CSR, for ``W`` and ``W^T``, from its mask (see the module doc)."""

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.dense = True
        self.dense_grad = True  # until the first step says otherwise (initialisation's scoring passes)
        self.rebuilds = 0
        self.seconds = 0.0
        self.shape = (0, 0)
        self.order = self.crow = self.col = self.order_t = self.crow_t = self.col_t = torch.empty(0, dtype=torch.long)

    def refresh(self, mask: torch.Tensor) -> bool:
        """Rebuild if the mask was written since the last build; returns whether the layer is sparse."""
        key = (mask.data_ptr(), mask._version)
        if key != self.key:
            self._rebuild(mask)
            self.key = key
        return not self.dense

    def _rebuild(self, mask: torch.Tensor) -> None:
        start = time.perf_counter()
        matrix = mask.reshape(mask.shape[0], -1)
        rows, cols = matrix.shape
        self.shape = (rows, cols)
        self.dense = bool(matrix.all())
        if not self.dense:
            nz = matrix.nonzero()
            self.order, self.col, self.crow = nz[:, 0] * cols + nz[:, 1], nz[:, 1], _crow(matrix.sum(1))
            nzt = matrix.t().nonzero()
            self.order_t, self.col_t, self.crow_t = nzt[:, 1] * cols + nzt[:, 0], nzt[:, 1], _crow(matrix.sum(0))
        if mask.is_cuda:
            torch.cuda.synchronize(mask.device)
        self.rebuilds += 1
        self.seconds += time.perf_counter() - start

    def matrix(self, flat: torch.Tensor, transposed: bool = False) -> torch.Tensor:
        """``W`` (or ``W^T``) in CSR, its values gathered from the flat weight."""
        rows, cols = self.shape
        with warnings.catch_warnings():  # "CSR support is in beta": said once in docs/speed.md
            warnings.simplefilter("ignore", UserWarning)
            if transposed:
                return torch.sparse_csr_tensor(self.crow_t, self.col_t, flat[self.order_t], (cols, rows))
            return torch.sparse_csr_tensor(self.crow, self.col, flat[self.order], (rows, cols))


class _CsrProduct(torch.autograd.Function):
    """``W @ P`` with ``W`` (the layer's weight, any shape, as an (O, K) matrix) in CSR on its mask."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, columns: torch.Tensor, pattern: CsrPattern) -> torch.Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(weight, columns)
        return torch.sparse.mm(pattern.matrix(weight.detach().reshape(-1)), columns)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        weight, columns = ctx.saved_tensors
        pattern: CsrPattern = ctx.pattern
        grad = grad.contiguous()
        grad_weight = grad_columns = None
        if ctx.needs_input_grad[1]:
            grad_columns = torch.sparse.mm(pattern.matrix(weight.detach().reshape(-1), transposed=True), grad)
        if ctx.needs_input_grad[0]:
            if pattern.dense_grad:
                grad_weight = (grad @ columns.t()).reshape(weight.shape)
            else:
                sampled = torch.sparse.sampled_addmm(pattern.matrix(weight.new_zeros(weight.numel())), grad, columns.t(), beta=0.0)
                flat = weight.new_zeros(weight.numel())
                flat[pattern.order] = sampled.values()
                grad_weight = flat.reshape(weight.shape)
        return grad_weight, grad_columns, None


class CsrTrainingConv2d(nn.Conv2d):
    """A masked Conv2d that trains as one CSR GEMM on its im2col matrix (:func:`dstbench.speed.gemm.im2col`)."""

    csr_pattern: CsrPattern
    weight_mask: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.csr_pattern.refresh(self.weight_mask):
            return super().forward(x)
        matrix, shape = im2col(x, self)
        return col2im(_CsrProduct.apply(self.weight, matrix, self.csr_pattern), shape, self.bias)


class CsrTrainingLinear(nn.Linear):
    """A masked Linear that trains as ``W_csr @ x^T``."""

    csr_pattern: CsrPattern
    weight_mask: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.csr_pattern.refresh(self.weight_mask):
            return super().forward(x)
        flat = x.reshape(-1, x.shape[-1])
        out = _CsrProduct.apply(self.weight, flat.t().contiguous(), self.csr_pattern).t()
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


_TRAINING_CLASSES: dict[type, type] = {nn.Conv2d: CsrTrainingConv2d, nn.Linear: CsrTrainingLinear}


def make_csr_trainable(name: str, module: nn.Module) -> None:
    """Switch ``module`` (exactly an nn.Conv2d or nn.Linear) to its CSR-training class, in place."""
    target = _TRAINING_CLASSES.get(type(module))
    if target is None:
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        raise BackendUnavailable(f"backend csr: layer {name} is a {kind}, which its training kernels (torch.nn Conv2d and Linear) do not cover")
    module.__class__ = target
    module.csr_pattern = CsrPattern()  # type: ignore[assignment]


def needs_dense_grad(needs: Needs, update_due: bool) -> bool:
    """Whether the engine reads weight gradients off the mask on this step (see the module doc)."""
    if needs.dense_grad == "every_step" or not needs.masked_optimizer or needs.per_step_hook or needs.backward_set:
        return True
    return needs.dense_grad == "update_steps" and update_due


class TrainingKernels:
    """The backend's layers of one training run: tells them each step whether dense weight gradients
    are read, and reports how often their formats were rebuilt and at what cost."""

    def __init__(self, backend: str, patterns: list[CsrPattern]) -> None:
        self.backend = backend
        self.patterns = patterns

    def before_step(self, needs: Needs, update_due: bool) -> None:
        dense = needs_dense_grad(needs, update_due)
        for pattern in self.patterns:
            pattern.dense_grad = dense

    def report(self) -> dict[str, Any]:
        """For ``summary.json``: re-compressions (installs of new masks, per layer) and their time."""
        return {
            "sparse_layers": sum(not pattern.dense for pattern in self.patterns),
            "recompressions": sum(pattern.rebuilds for pattern in self.patterns),
            "recompress_seconds": sum(pattern.seconds for pattern in self.patterns),
        }


def check_training(name: str, device: torch.device, *, compile: bool = False, amp: bool = False) -> Backend:
    """The backend ``train --backend NAME`` asks for, or one line saying why it cannot train here."""
    if name not in backend_names():
        raise ConfigError(f"unknown backend {name!r}; valid choices: {', '.join(backend_names())}")
    backend = get_backend(name)
    backend.check_device(device)
    trainers = [other for other in backend_names() if get_backend(other).supports_training]
    if not backend.supports_training:
        raise BackendUnavailable(
            f"backend {name} cannot train (no backward with weight gradients; `dstbench speed` measures its inference); "
            f"train with {' or '.join(trainers)}"
        )
    if name != "masked" and (compile or amp):
        raise ConfigError(f"--backend {name} runs its own float32 kernels eagerly; drop {'--compile' if compile else '--amp'}")
    return backend


def attach(model: nn.Module, name: str, device: torch.device) -> TrainingKernels | None:
    """Make ``model``'s prunable layers train with backend ``name`` (None for ``masked``: nothing changes)."""
    backend = check_training(name, device)
    if name == "masked":
        return None
    for layer_name, module in find_prunable_layers(model):
        backend.train_layer(layer_name, module)
    patterns = [pattern for _, module in find_prunable_layers(model) if isinstance(pattern := getattr(module, "csr_pattern", None), CsrPattern)]
    return TrainingKernels(name, patterns)

