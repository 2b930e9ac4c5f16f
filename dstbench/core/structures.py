"""Sparsity structures: which masks a layer may hold, and how many weights that makes it keep.

Unstructured masks rarely map onto fast kernels; a *structure* restricts the mask to shapes that do
(jaxpruner's ``sparsity_types``, sparsimony's N:M). It is part of the plan, like the distribution, and
the engine enforces it for every method (:mod:`dstbench.engine.structure`). The weight of a layer is
read as a matrix of ``out`` rows and ``fan_in`` columns (a conv's ``in/groups * kh * kw`` flattened
in PyTorch's order) except where a structure says otherwise:

* ``unstructured``: any mask (the default; what every run did before structures existed).
* ``nm:N:M``: in every group of ``M`` consecutive input weights of a row, exactly ``N`` are kept.
  Groups run along the input dimension: a linear layer's ``in_features``; a conv's *input channels*
  at each kernel position, as aojunzz/NM-sparsity (``devkit/sparse_ops/sparse_ops.py``) groups them
  (weight permuted to ``out x kh x kw x in``), which is the layout N:M GEMM kernels read for a conv as
  an implicit GEMM over channels-last inputs. N:M fixes the layer's density at ``N/M``: the plan's
  sparsity does not change it.
* ``block:RxC``: the mask is made of whole ``R x C`` tiles of the ``out x fan_in`` matrix (BSR's layout).
* ``channel``: whole output channels (conv) or neurons (linear): whole rows.

A layer whose shape cannot take the structure (input channels not a multiple of ``M``; rows or
``fan_in`` not multiples of the block) keeps an unstructured mask at its planned count: the first
conv of a CIFAR network (3 input channels) under ``nm:2:4`` is the usual case; ``dstbench inspect``
lists such layers. Counts under a structure (:meth:`Structure.count`): N:M keeps ``numel * N / M``;
block and channel keep the nearest whole number of units (blocks, rows) to the planned count, ties
up, at least one unit when the plan keeps any weight.

This module does not import torch: the CLI's help and the plan read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from dstbench.core.errors import ConfigError

__all__ = ["Structure", "parse_structure", "STRUCTURE_FORMS", "UNSTRUCTURED"]

STRUCTURE_FORMS = "unstructured, nm:N:M (e.g. nm:2:4), block:RxC (e.g. block:4x4) or channel"
"""The accepted spellings, for help texts and errors."""

Kind = Literal["unstructured", "nm", "block", "channel"]


@dataclass(frozen=True)
class Structure:
    """A parsed structure; ``a``/``b`` are (N, M) for ``nm`` and (R, C) for ``block``."""

    kind: Kind
    a: int = 0
    b: int = 0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"nm:{self.a}:{self.b}"
        if self.kind == "block":
            return f"block:{self.a}x{self.b}"
        return self.kind

    @property
    def unstructured(self) -> bool:
        return self.kind == "unstructured"

    def applies(self, shape: tuple[int, ...]) -> bool:
        """Whether a weight of ``shape`` can hold this structure (otherwise it stays unstructured)."""
        if self.kind == "nm":
            return len(shape) >= 2 and shape[1] % self.b == 0
        if self.kind == "block":
            return shape[0] % self.a == 0 and math.prod(shape[1:]) % self.b == 0
        return self.kind == "channel"

    def unit(self, shape: tuple[int, ...]) -> int:
        """Weights per selection unit: a block, a row (channel), 1 otherwise (N:M counts are fixed)."""
        if not self.applies(shape):
            return 1
        if self.kind == "block":
            return self.a * self.b
        return math.prod(shape[1:]) if self.kind == "channel" else 1

    def count(self, shape: tuple[int, ...], planned: int) -> int:
        """The exact active count of a layer of ``shape`` whose unstructured plan keeps ``planned``."""
        numel = math.prod(shape)
        if not self.applies(shape) or planned >= numel:
            return planned
        if self.kind == "nm":
            return numel * self.a // self.b
        unit = self.unit(shape)
        units = math.floor(planned / unit + 0.5)
        return min(numel // unit, max(units, 1 if planned > 0 else 0)) * unit

    def realisable_density(self, shape: tuple[int, ...], active: int) -> float:
        """The fraction of a layer's dense FLOPs a kernel for this structure really computes, for a
        mask that holds the structure with ``active`` weights: N:M at the kernel's ratio ``N/M``,
        blocks and channels by the whole units kept; dense kernels skip nothing (1.0)."""
        numel = math.prod(shape)
        if self.unstructured or not self.applies(shape) or active >= numel:
            return 1.0
        return self.a / self.b if self.kind == "nm" else active / numel


UNSTRUCTURED = Structure("unstructured")

_NM = re.compile(r"nm:(\d+):(\d+)")
_BLOCK = re.compile(r"block:(\d+)x(\d+)")


def parse_structure(text: str | Structure) -> Structure:
    """``text`` as a :class:`Structure`, or a one-line :class:`ConfigError` naming the accepted forms."""
    if isinstance(text, Structure):
        return text
    spelled = str(text).strip().lower()
    if spelled in ("unstructured", "channel"):
        return Structure("channel" if spelled == "channel" else "unstructured")
    if (nm := _NM.fullmatch(spelled)) is not None:
        n, m = int(nm.group(1)), int(nm.group(2))
        if not 0 < n < m:
            raise ConfigError(f"structure {text!r}: N:M needs 0 < N < M, got N={n}, M={m}")
        return Structure("nm", n, m)
    if (block := _BLOCK.fullmatch(spelled)) is not None:
        r, c = int(block.group(1)), int(block.group(2))
        if r < 1 or c < 1 or r * c < 2:
            raise ConfigError(f"structure {text!r}: a block needs R, C >= 1 and more than one weight")
        return Structure("block", r, c)
    raise ConfigError(f"unknown structure {text!r}; use {STRUCTURE_FORMS}")
