"""The GEMM form of a convolution that the ``csr`` and ``bsr`` kernels, inference and training alike,
compute with (the layout and its measured reasons: :mod:`dstbench.speed.kernels`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dstbench.speed.backends import BackendUnavailable

__all__ = ["im2col", "col2im", "check_conv"]


def im2col(x: torch.Tensor, conv: Any) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``conv``'s input as the (C*kh*kw, N*Ho*Wo) matrix of its GEMM (see the module doc), and (N, Ho, Wo).
    ``conv`` is anything with Conv2d's kernel_size, dilation, padding and stride (tuples)."""
    n, _, h, w = x.shape
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    ho = (h + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    wo = (w + 2 * conv.padding[1] - conv.dilation[1] * (conv.kernel_size[1] - 1) - 1) // conv.stride[1] + 1
    matrix = cols[0] if n == 1 else cols.transpose(0, 1).reshape(cols.shape[1], -1)
    return matrix, (n, ho, wo)


def col2im(product: torch.Tensor, shape: tuple[int, int, int], bias: torch.Tensor | None) -> torch.Tensor:
    """The GEMM's (O, N*Ho*Wo) product as an (N, O, Ho, Wo) view, plus the bias."""
    n, ho, wo = shape
    out = product.reshape(-1, n, ho, wo).transpose(0, 1)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def check_conv(backend: str, name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)):
        raise BackendUnavailable(
            f"backend {backend}: layer {name} is a grouped, non-zero-padded or 'same'-padded convolution, which its GEMM form does not cover"
        )
