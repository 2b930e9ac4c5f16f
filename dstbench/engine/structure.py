"""The engine's half of sparsity structures: every method's answer is made to hold the plan's structure.

Methods decide masks, not structures: SET, RigL, SNIP and a plugin written before structures existed
all return unstructured masks. Before installing them the engine *projects* each mask onto the
structure with the shared structured top-k (:func:`dstbench.core.structured_select.structured_topk`),
ranking every weight by a two-level score:

1. whether the method chose it (the method's decision is its score and always comes first), then
2. ``|W|`` (the current weight, on the backward set for Top-KAST), scaled below one unit's worth so
   that within a unit (an N:M group, a block, a channel) it only breaks ties between units or groups
   that the method's choice leaves equal; remaining ties prefer the current mask, then the lower index.

So an N:M group keeps the method's chosen weights (the largest of them when it chose more than N, and
the largest unchosen ones when it chose fewer); a block or channel survives by how many weights the
method chose in it. A method that already returns structured masks (SR-STE) is left unchanged: the
projection of a mask that holds the structure with the structure's count is that mask. Under
``unstructured`` nothing is projected, so such runs are bit for bit what they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dstbench.core.context import MaskedLayer
from dstbench.core.structured_select import holds_structure, structured_topk
from dstbench.core.structures import Structure

__all__ = ["project_masks", "structure_problems", "projection_scores", "cover_masks"]


def projection_scores(chosen: torch.Tensor, weight: torch.Tensor, structure: Structure) -> torch.Tensor:
    """``chosen`` (0/1) plus ``|W|`` scaled so a whole unit's magnitudes add up to less than one choice."""
    shape = tuple(weight.shape)
    per_unit = structure.b if structure.kind == "nm" else structure.unit(shape)
    magnitude = weight.detach().abs().to(torch.float64)
    top = float(magnitude.max()) if magnitude.numel() else 0.0
    scale = 1.0 / (top * (per_unit + 1)) if top > 0 else 0.0
    return chosen.to(torch.float64) + magnitude.to(chosen.device) * scale


def project_masks(structure: Structure, layers: Sequence[MaskedLayer], masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``masks`` (a method's answer) made to hold ``structure``; unchanged under ``unstructured``."""
    if structure.unstructured:
        return dict(masks)
    by_name = {layer.name: layer for layer in layers}
    projected = {}
    for name, mask in masks.items():
        layer = by_name[name]
        mask = mask.to(layer.mask.device)
        scores = projection_scores(mask, layer.weight, structure)
        projected[name] = structured_topk(scores, structure, int(mask.sum()), prefer=layer.mask)
    return projected


def structure_problems(structure: Structure, layers: Sequence[MaskedLayer]) -> list[str]:
    """Layers whose mask does not hold the structure (as readable lines; empty when all do)."""
    return [f"{layer.name}: mask does not hold the structure {structure}" for layer in layers if not holds_structure(layer.mask, structure)]


def cover_masks(structure: Structure, forward: Mapping[str, torch.Tensor], backward: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backward sets (Top-KAST's ``B``) widened to hold the projected forward masks; unchanged when
    unstructured, where a method's ``B`` must hold its own mask or be refused."""
    if structure.unstructured:
        return dict(backward)
    return {name: mask.to(forward[name].device) | forward[name] for name, mask in backward.items()}
