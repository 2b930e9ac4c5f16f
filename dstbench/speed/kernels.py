"""The layer backends: ``masked`` (the baseline), ``csr``, ``bsr`` and ``semi-structured``.

Convolutions run as one GEMM on an im2col matrix. Measured on this CPU (MKL, one thread, 512x4608
weight at 98 %, 1,024 columns): ``torch.sparse.mm(W_csr, P)`` with ``P`` contiguous of shape
(C*kh*kw, N*Ho*Wo) took 16 ms, the same product with ``P`` a transposed view 23 ms, and
``P^T @ W_csr^T`` (dense times sparse) 48-50 ms, against 88 ms dense. So the layout here is
:func:`torch.nn.functional.unfold`'s own (C*kh*kw, L) per sample: at batch 1 it is used as is, with no
copy besides the im2col itself; a batch costs one transpose copy to (C*kh*kw, N*L). The product comes
out as (O, N, Ho, Wo) and is returned as a strided view in NCHW order, without a copy.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dstbench.speed.backends import Backend, BackendUnavailable, LayerBackend, Prepared, masked_layers, register_backend
from dstbench.speed.gemm import check_conv, col2im, im2col
from dstbench.speed.training import make_csr_trainable

__all__ = ["SparseGemmConv2d", "SparseGemmLinear", "block_size", "is_two_four"]


def _mask(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask")
    assert isinstance(mask, torch.Tensor)
    return mask


def _matrix(module: nn.Module) -> torch.Tensor:
    """The masked weight as a (out, in*kh*kw) matrix in unfold's column order."""
    weight = (getattr(module, "weight") * _mask(module)).detach()
    return weight.reshape(weight.shape[0], -1)


class SparseGemmLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` in a torch sparse layout, as ``sparse.mm(W, x^T)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.sparse.mm(self.weight, flat.t().contiguous()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


class SparseGemmConv2d(nn.Module):
    """A Conv2d (groups 1, zero padding) as one sparse GEMM on the im2col matrix (see the module doc)."""

    def __init__(self, weight: torch.Tensor, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = weight
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.kernel_size: tuple[int, int] = conv.kernel_size  # type: ignore[assignment]
        self.stride: tuple[int, int] = conv.stride  # type: ignore[assignment]
        self.padding: tuple[int, int] = conv.padding  # type: ignore[assignment]
        self.dilation: tuple[int, int] = conv.dilation  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matrix, shape = im2col(x, self)
        return col2im(torch.sparse.mm(self.weight, matrix), shape, self.bias)


def _wrap(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return SparseGemmConv2d(weight, module)
    bias = getattr(module, "bias")
    return SparseGemmLinear(weight, bias if isinstance(bias, torch.Tensor) else None)


class MaskedBackend(Backend):
    """The baseline: each masked layer's dense kernel on ``W * M`` (multiplied once, as a deployed dense
    network would hold it), so every speedup is over the kernel dstbench trains with."""

    name = "masked"
    supports_backward = True
    tolerance = 0.0
    supports_training = True

    def train_layer(self, name: str, module: nn.Module) -> None:
        """Nothing to change: training's own kernel is the dense one on the masked weight."""

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        out = copy.deepcopy(model)
        with torch.no_grad():
            for _, module in masked_layers(out):
                getattr(module, "weight").mul_(_mask(module))
        return Prepared(out)


class CsrBackend(LayerBackend):
    """torch's CSR layout (MKL on CPU, cuSPARSE on CUDA); any unstructured mask."""

    name = "csr"
    tolerance = 1e-5
    supports_training = True

    def check(self, name: str, module: nn.Module, device: torch.device) -> None:
        check_conv(self.name, name, module)

    def train_layer(self, name: str, module: nn.Module) -> None:
        check_conv(self.name, name, module)
        make_csr_trainable(name, module)

    def convert(self, module: nn.Module) -> nn.Module:
        with warnings.catch_warnings():  # "CSR support is in beta": said once in docs/speed.md, not per layer
            warnings.simplefilter("ignore", UserWarning)
            return _wrap(module, _matrix(module).to_sparse_csr())


def block_size(mask: torch.Tensor) -> int | None:
    """The largest R in 32, 16, 8, 4, 2 such that every RxR tile of the (out, in*kh*kw) mask is all on
    or all off; None when there is none (the mask is not block-structured)."""
    matrix = mask.reshape(mask.shape[0], -1)
    rows, cols = matrix.shape
    for size in (32, 16, 8, 4, 2):
        if rows % size or cols % size:
            continue
        tiles = matrix.reshape(rows // size, size, cols // size, size).sum(dim=(1, 3))
        if bool(((tiles == 0) | (tiles == size * size)).all()):
            return size
    return None


class BsrBackend(LayerBackend):
    """torch's block-sparse layout, for masks made of square all-on/all-off tiles."""

    name = "bsr"
    tolerance = 1e-5

    def check(self, name: str, module: nn.Module, device: torch.device) -> None:
        check_conv(self.name, name, module)
        if block_size(_mask(module)) is None:
            raise BackendUnavailable(
                f"backend bsr: layer {name}'s mask is not block-structured (no RxR tile, R in 32..2, all on or all off)"
            )

    def convert(self, module: nn.Module) -> nn.Module:
        size = block_size(_mask(module))
        assert size is not None  # check() ran first
        return _wrap(module, _matrix(module).to_sparse_bsr((size, size)))


def is_two_four(mask: torch.Tensor) -> bool:
    """Every group of 4 consecutive inputs of an output keeps at most 2 (the 2:4 pattern)."""
    matrix = mask.reshape(mask.shape[0], -1)
    if matrix.shape[1] % 4:
        return False
    return bool((matrix.reshape(matrix.shape[0], -1, 4).sum(dim=-1) <= 2).all())


class SemiStructuredLinear(nn.Module):
    """PyTorch's 2:4 semi-structured weight (cuSPARSELt/CUTLASS); convolutions through im2col rows."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        self.conv: dict[str, Any] | None = None
        if isinstance(module, nn.Conv2d):
            self.conv = {"kernel_size": module.kernel_size, "dilation": module.dilation, "padding": module.padding, "stride": module.stride}
        self.weight = to_sparse_semi_structured(_matrix(module).contiguous())
        bias = getattr(module, "bias")
        self.bias = bias.detach().clone() if isinstance(bias, torch.Tensor) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.linear(x, self.weight, self.bias)
        n, _, h, w = x.shape
        cols = F.unfold(x, **self.conv)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        probe = F.conv2d(torch.empty(1, 1, h, w, device="meta"), torch.empty(1, 1, *self.conv["kernel_size"], device="meta"),
                         stride=self.conv["stride"], padding=self.conv["padding"], dilation=self.conv["dilation"])  # fmt: skip
        out = F.linear(rows, self.weight, self.bias)
        return out.reshape(n, probe.shape[2], probe.shape[3], -1).permute(0, 3, 1, 2)


class SemiStructuredBackend(LayerBackend):
    """2:4 on CUDA with compute capability 8.0 or newer; anything else is refused in one line."""

    name = "semi-structured"
    tolerance = 1e-2  # half-precision accumulation order differs from the dense kernel's

    def check_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise BackendUnavailable("backend semi-structured needs a CUDA device (PyTorch's 2:4 kernels); this is " + device.type)
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise BackendUnavailable("backend semi-structured needs compute capability 8.0 or newer (Ampere)")

    def check(self, name: str, module: nn.Module, device: torch.device) -> None:
        self.check_device(device)
        check_conv(self.name, name, module)
        if not is_two_four(_mask(module)):
            raise BackendUnavailable(f"backend semi-structured: layer {name}'s mask is not 2:4 (at most 2 of every 4 inputs)")

    def convert(self, module: nn.Module) -> nn.Module:
        try:
            return SemiStructuredLinear(module)
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailable(f"backend semi-structured: {str(exc).splitlines()[0]}") from None


register_backend("masked", MaskedBackend)
register_backend("csr", CsrBackend)
register_backend("bsr", BsrBackend)
register_backend("semi-structured", SemiStructuredBackend)
