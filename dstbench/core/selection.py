"""The one selection kernel every drop/grow method shares: exact top-k with deterministic ties.

DST papers differ in *scores*, not in how scores become masks. Keeping a single kernel means SET, RigL,
MEST, ITOP and BiDST can only differ where their papers differ, and that the result is reproducible
bit for bit: ``torch.topk`` makes no promise about which of several equal scores it returns, and
equal scores are common (zero-initialised grown weights, zero gradients, zero BiDST scores).

Tie-break order: higher score first; among equal scores, entries in ``prefer`` (normally the
currently active set, so ties never cause needless churn) first; then the lower flat index.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["topk_mask", "ranked_indices", "topk_per_row", "apportion", "Selection", "recording_selections"]


@dataclass(frozen=True)
class Selection:
    """One call of the kernel as :func:`recording_selections` keeps it, on the CPU: per row, the scores
    (float64, NaN as -inf, as ranked), which entries could be chosen and which were."""

    scores: torch.Tensor
    eligible: torch.Tensor
    chosen: torch.Tensor


_recorders: list[list[Selection]] = []


@contextlib.contextmanager
def recording_selections() -> Iterator[list[Selection]]:
    """Every selection made inside the block, in order: what the device-agreement check
    (:mod:`dstbench.speed.agreement`) needs to tell an exact tie from a disagreement. Off otherwise
    (one empty-list test per call)."""
    calls: list[Selection] = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def record_selection(scores: torch.Tensor, eligible: torch.Tensor | None, chosen: torch.Tensor, rows: int = 1) -> None:
    """Keep one selection for the innermost :func:`recording_selections` block, if any."""
    if not _recorders:
        return
    # Copies: the eligible set is often the layer's mask, which the update is about to overwrite.
    flat = torch.nan_to_num(scores.detach().to("cpu", torch.float64, copy=True).reshape(rows, -1), nan=float("-inf"))
    allowed = torch.ones_like(flat, dtype=torch.bool) if eligible is None else eligible.detach().to("cpu", torch.bool, copy=True)
    _recorders[-1].append(Selection(flat, allowed.reshape(rows, -1), chosen.detach().to("cpu", torch.bool, copy=True).reshape(rows, -1)))


def ranked_indices(scores: torch.Tensor, prefer: torch.Tensor | None = None) -> torch.Tensor:
    """Flat indices of ``scores`` from best to worst with the deterministic tie-break order.

    NaN scores rank as ``-inf``: a method that produced NaN must not have it chosen silently.
    """
    flat = torch.nan_to_num(scores.detach().reshape(-1), nan=float("-inf"))
    if prefer is None:
        # A stable sort keeps equal scores in index order.
        return torch.sort(flat, descending=True, stable=True).indices
    # Two stable sorts: first order by the secondary key (preferred entries first, then index), then
    # by score. Stability of the second sort keeps the secondary order among equal scores.
    preferred_first = torch.sort(prefer.reshape(-1).to(torch.int8), descending=True, stable=True).indices
    by_score = torch.sort(flat.index_select(0, preferred_first), descending=True, stable=True).indices
    return preferred_first.index_select(0, by_score)


def topk_mask(
    scores: torch.Tensor,
    k: int,
    *,
    eligible: torch.Tensor | None = None,
    prefer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask shaped like ``scores`` with exactly ``k`` entries set: the ``k`` best scores.

    ``eligible`` restricts the choice to a subset; choosing more than it holds is an error, never a
    silent short mask. Returns a new tensor; the inputs are not modified.
    """
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} entries")
    flat = scores.reshape(-1)
    chosen = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if eligible is None:
        candidates = None
    else:
        # Rank only the eligible entries; they stay in index order, so the tie-break is unchanged.
        candidates = eligible.reshape(-1).nonzero().squeeze(1)
        if k > candidates.numel():
            raise ValueError(f"cannot select {k} entries: only {candidates.numel()} are eligible")
        # index_select, not advanced indexing: the latter is orders of magnitude slower on CPU.
        flat = flat.index_select(0, candidates)
        prefer = None if prefer is None else prefer.reshape(-1).index_select(0, candidates)
    if k:
        best = ranked_indices(flat, prefer)[:k]
        chosen.index_fill_(0, best if candidates is None else candidates.index_select(0, best), True)
    record_selection(scores, eligible, chosen)
    return chosen.view(scores.shape)


def topk_per_row(
    scores: torch.Tensor,
    counts: torch.Tensor,
    *,
    eligible: torch.Tensor | None = None,
    prefer: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`topk_mask` applied to every row (first dimension) at once: ``counts[i]`` entries of row
    ``i``, with the same scores, eligibility and tie-break order, so it equals the row-by-row loop
    (SRigL's per-neuron fan-in) without a Python loop over neurons."""
    rows = scores.shape[0]
    flat = torch.nan_to_num(scores.detach().reshape(rows, -1), nan=float("-inf"))
    n = flat.shape[1]
    counts = counts.to(device=scores.device, dtype=torch.long).reshape(rows)
    if bool(((counts < 0) | (counts > n)).any()):
        raise ValueError(f"cannot select {counts.tolist()} of {n} entries per row")
    # The order topk_mask ranks by: score, then preferred entries, then the lower index (stable sorts
    # from the least significant key up) ...
    order = torch.arange(n, device=scores.device).expand(rows, n)
    if prefer is not None:
        key = prefer.reshape(rows, -1).to(torch.int8)
        order = torch.sort(key, dim=1, descending=True, stable=True).indices
    by_score = torch.sort(flat.gather(1, order), dim=1, descending=True, stable=True).indices
    order = order.gather(1, by_score)
    # ... and only eligible entries, which keep that order among themselves.
    if eligible is not None:
        allowed = eligible.reshape(rows, -1)
        short = counts > allowed.sum(dim=1)
        if bool(short.any()):
            raise ValueError(f"cannot select {counts[short].tolist()} entries in rows {short.nonzero().flatten().tolist()}")
        by_allowed = torch.sort(allowed.gather(1, order).to(torch.int8), dim=1, descending=True, stable=True).indices
        order = order.gather(1, by_allowed)
    take = torch.arange(n, device=scores.device).expand(rows, n) < counts.unsqueeze(1)
    chosen = torch.zeros(rows, n, dtype=torch.bool, device=scores.device)
    chosen.scatter_(1, order, take)
    record_selection(scores, eligible, chosen, rows)
    return chosen.view(scores.shape)


def apportion(shares: list[float], total: int, caps: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``shares`` (summing to 1), each at most its cap.

    How SNFS and DSR split regrowth over layers, made exact (Dettmers & Zettlemoyer's
    ``calc_growth_redistribution``): a share above its cap is clipped and the excess spread evenly
    over the uncapped layers (the fixed point of the official iterative loop), then the real-valued
    split is rounded by largest remainder (ties to the lower index) so the counts sum to ``total``.
    """
    if total > sum(caps):
        raise ValueError(f"cannot place {total} units under caps summing to {sum(caps)}")
    alloc = [share * total for share in shares]
    free = set(range(len(alloc)))
    while True:
        over = [i for i in free if alloc[i] > caps[i]]
        if not over:
            break
        excess = sum(alloc[i] - caps[i] for i in over)
        for i in over:
            alloc[i] = float(caps[i])
            free.discard(i)
        for i in free:
            alloc[i] += excess / len(free)
    counts = [math.floor(a) for a in alloc]
    remainder = total - sum(counts)
    by_fraction = sorted(range(len(alloc)), key=lambda i: (counts[i] - alloc[i], i))
    while remainder > 0:
        for i in by_fraction:
            if remainder and counts[i] < caps[i]:
                counts[i] += 1
                remainder -= 1
    return counts
