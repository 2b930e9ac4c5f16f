"""Global top-k over all sparsified layers, with the layer-collapse guard: one kernel for every method
that ranks weights across layers (SNIP, GraSP, SynFlow, LT, DSR, GraNet's global pruning).

A single threshold over the concatenated scores of every layer is what those papers' code does
(``torch.cat`` of all scores, then ``topk``/``kthvalue``). At high sparsity it empties whole layers
(*layer collapse*, Tanaka et al. 2020), after which no signal crosses the network. The guard keeps
the ``min_active`` best-scoring entries of every layer (``--min-active``, default 1) and fills the rest
of the exact total from the global ranking of everything else. That is the same as "take the global
top-k, then give every layer that fell below ``min_active`` its best entries back and drop the
globally weakest surplus entries elsewhere": the global ranking decides every layer that did not
collapse, and the total is exact either way. ``min_active=0`` turns the guard off (collapsed layers are
kept at 0 and reported).

Every call reports what the plain global top-k would have given each layer, which layers the guard
clamped and which ended empty, so a run can say plainly what happened (``summary.json``
``method_report``, ``dstbench inspect``).

Ranking order is :func:`dstbench.core.selection.ranked_indices`' over the layers' flattened scores
concatenated in the given order: higher score first, then preferred entries, then the lower position
(earlier layer, lower index). NaN ranks last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.selection import ranked_indices, record_selection, topk_mask

__all__ = ["GlobalSelection", "global_topk", "layerwise_topk"]


@dataclass(frozen=True)
class GlobalSelection:
    """The masks of one global selection and what the collapse guard did to reach them."""

    masks: dict[str, torch.Tensor]
    """Boolean mask per layer, exactly ``total`` entries set in all."""
    total: int
    min_active: int
    unguarded: dict[str, int]
    """Per-layer counts of the plain global top-``total``, before the guard."""
    clamped: tuple[str, ...]
    """Layers the plain global top-k left below ``min_active``, raised to it by the guard."""

    @property
    def active(self) -> dict[str, int]:
        return {name: int(mask.sum()) for name, mask in self.masks.items()}

    @property
    def collapsed(self) -> tuple[str, ...]:
        """Layers with no active weight at all (only possible with ``min_active=0``)."""
        return tuple(name for name, count in self.active.items() if count == 0)

    def report(self) -> dict[str, Any]:
        """JSON-ready numbers for ``summary.json``: per-layer counts, and what the guard changed."""
        return {
            "scope": "global",
            "total_active": self.total,
            "min_active": self.min_active,
            "layer_active": self.active,
            "clamped_layers": {name: {"global_topk": self.unguarded[name], "active": self.active[name]} for name in self.clamped},
            "collapsed_layers": list(self.collapsed),
        }


def global_topk(
    scores: Mapping[str, torch.Tensor],
    total: int,
    *,
    min_active: int = 1,
    eligible: Mapping[str, torch.Tensor] | None = None,
    prefer: Mapping[str, torch.Tensor] | None = None,
) -> GlobalSelection:
    """Keep the ``total`` best of all layers' ``scores`` together, at least ``min_active`` per layer.

    ``eligible`` (per layer, optional) restricts the choice (iterative pruning keeps pruned entries
    pruned); a layer's guard is then ``min(min_active, its eligible count)``. ``prefer`` breaks ties
    in favour of its entries (normally the current mask). Raises :class:`ConfigError` when the guard
    alone needs more than ``total`` weights, and ``ValueError`` when ``total`` exceeds what is eligible.
    """
    if min_active < 0:
        raise ConfigError(f"min_active must be >= 0, got {min_active}")
    names = list(scores)
    shapes = {name: scores[name].shape for name in names}
    sizes = [scores[name].numel() for name in names]
    device = scores[names[0]].device if names else torch.device("cpu")
    flat = torch.cat([scores[name].detach().reshape(-1).to(device, torch.float64) for name in names]) if names else torch.zeros(0)
    allowed = _concat(eligible, names, sizes, device, default=True)
    preferred = None if prefer is None else _concat(prefer, names, sizes, device, default=False)
    if not 0 <= total <= int(allowed.sum()):
        raise ValueError(f"cannot select {total} entries: {int(allowed.sum())} are eligible")

    # One ranking serves both the plain global top-k (for the report) and the guarded selection.
    ranked = ranked_indices(flat, preferred)
    ranked = ranked[allowed.index_select(0, ranked)]
    owner = torch.repeat_interleave(torch.arange(len(names), device=device), torch.tensor(sizes, device=device))
    unguarded = torch.bincount(owner.index_select(0, ranked[:total]), minlength=len(names)).tolist()

    reserved = torch.zeros_like(allowed)
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    for i, name in enumerate(names):
        layer_allowed = allowed[starts[i] : starts[i + 1]]
        guard = min(min_active, int(layer_allowed.sum()))
        if guard:
            layer_scores = flat[starts[i] : starts[i + 1]]
            layer_prefer = None if preferred is None else preferred[starts[i] : starts[i + 1]]
            reserved[starts[i] : starts[i + 1]] = topk_mask(layer_scores, guard, eligible=layer_allowed, prefer=layer_prefer)
    n_reserved = int(reserved.sum())
    if n_reserved > total:
        raise ConfigError(
            f"the collapse guard keeps {min_active} weight(s) in each of {len(names)} layers ({n_reserved} in all) "
            f"but only {total} may stay active; lower --min-active or the sparsity"
        )
    chosen = reserved.clone()
    rest = ranked[~reserved.index_select(0, ranked)][: total - n_reserved]
    chosen[rest] = True
    record_selection(flat, allowed & ~reserved, chosen & ~reserved)  # the guard's picks were recorded apart
    masks = {name: chosen[starts[i] : starts[i + 1]].view(shapes[name]).clone() for i, name in enumerate(names)}
    counts = dict(zip(names, unguarded))
    clamped = tuple(name for i, name in enumerate(names) if counts[name] < min(min_active, int(allowed[starts[i] : starts[i + 1]].sum())))
    return GlobalSelection(masks=masks, total=total, min_active=min_active, unguarded=counts, clamped=clamped)


def layerwise_topk(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Each layer keeps its own ``counts[name]`` best scores (the plan's per-layer counts)."""
    return {name: topk_mask(score, counts[name]) for name, score in scores.items()}


def _concat(
    per_layer: Mapping[str, torch.Tensor] | None, names: list[str], sizes: list[int], device: torch.device, *, default: bool
) -> torch.Tensor:
    if per_layer is None:
        return torch.full((sum(sizes),), default, dtype=torch.bool, device=device)
    parts = [per_layer[name].reshape(-1).to(device, torch.bool) if name in per_layer else torch.full((size,), default, dtype=torch.bool, device=device) for name, size in zip(names, sizes)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=device)
