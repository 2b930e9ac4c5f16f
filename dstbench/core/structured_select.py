"""Structured top-k: the shared selection kernel (:mod:`dstbench.core.selection`) under a structure.

A method scores weights; under a structure (:mod:`dstbench.core.structures`) the choice is made per
unit instead of per weight:

* ``nm:N:M``: the ``N`` best of every group of ``M`` (:func:`~dstbench.core.selection.topk_per_row`
  over the groups, so ties break as everywhere: preferred entries, then the lower index);
* ``block:RxC`` and ``channel``: scores are pooled per unit by their **sum** (a block's or a row's
  total score), and the best ``k / unit`` units are kept whole; a unit is preferred when any of its
  entries is. A sum, not a mean, because every unit of a layer has the same size, so both rank alike.

Layers the structure does not apply to are selected unstructured (:meth:`Structure.applies`).
"""

from __future__ import annotations

import torch

from dstbench.core.selection import topk_mask, topk_per_row
from dstbench.core.structures import Structure

__all__ = ["structured_topk", "holds_structure", "units_view", "groups_view"]


def groups_view(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """``tensor`` (a weight's shape) as rows of ``m`` consecutive input weights: a conv's input
    channels at each kernel position (``out x kh x kw x in``, aojunzz/NM-sparsity's order)."""
    moved = tensor.movedim(1, -1) if tensor.dim() > 2 else tensor
    return moved.reshape(-1, m)


def _from_groups(groups: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) > 2:
        moved_shape = (shape[0], *shape[2:], shape[1])
        return groups.reshape(moved_shape).movedim(-1, 1).contiguous()
    return groups.reshape(shape)


def units_view(tensor: torch.Tensor, structure: Structure) -> torch.Tensor:
    """``tensor`` as (units, weights per unit) for ``block`` and ``channel``."""
    rows = tensor.reshape(tensor.shape[0], -1)
    if structure.kind == "channel":
        return rows
    r, c = structure.a, structure.b
    return rows.reshape(rows.shape[0] // r, r, rows.shape[1] // c, c).permute(0, 2, 1, 3).reshape(-1, r * c)


def _from_units(units: torch.Tensor, structure: Structure, shape: torch.Size) -> torch.Tensor:
    if structure.kind == "channel":
        return units.reshape(shape)
    r, c = structure.a, structure.b
    rows, cols = shape[0], units.numel() // shape[0]
    return units.reshape(rows // r, cols // c, r, c).permute(0, 2, 1, 3).reshape(shape).contiguous()


def structured_topk(scores: torch.Tensor, structure: Structure, k: int, *, prefer: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of ``scores``' shape holding ``structure`` with ``structure.count(shape, k)``
    entries: the best units by ``scores`` (higher is kept). A layer kept whole (``k >= numel``, as ERK
    may keep a small layer) holds every structure."""
    shape = tuple(scores.shape)
    if structure.unstructured or not structure.applies(shape) or k >= scores.numel():
        return topk_mask(scores, k, prefer=prefer)
    if structure.kind == "nm":
        groups = groups_view(scores, structure.b)
        counts = torch.full((groups.shape[0],), structure.a, dtype=torch.long)
        chosen = topk_per_row(groups, counts, prefer=None if prefer is None else groups_view(prefer, structure.b))
        return _from_groups(chosen, scores.shape)
    units = units_view(scores.detach(), structure)
    pooled = torch.nan_to_num(units.to(torch.float64), nan=float("-inf")).sum(dim=1)
    unit_prefer = None if prefer is None else units_view(prefer, structure).any(dim=1)
    keep = topk_mask(pooled, structure.count(shape, k) // units.shape[1], prefer=unit_prefer)
    return _from_units(keep.unsqueeze(1).expand_as(units), structure, scores.shape)


def holds_structure(mask: torch.Tensor, structure: Structure) -> bool:
    """Whether ``mask`` satisfies ``structure`` (always where it does not apply, and for a dense mask)."""
    if structure.unstructured or not structure.applies(tuple(mask.shape)) or bool(mask.all()):
        return True
    if structure.kind == "nm":
        return bool((groups_view(mask, structure.b).sum(dim=1) == structure.a).all())
    units = units_view(mask, structure)
    return bool((units.all(dim=1) | ~units.any(dim=1)).all())
