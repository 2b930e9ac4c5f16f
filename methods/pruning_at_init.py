"""Pruning at initialisation: SNIP, GraSP and SynFlow score every weight once, before training, keep the
best, and train that mask unchanged.

All three rank globally in their papers and code; here the ranking follows the plan's distribution:

* ``--distribution global``: one ranking over all sparsified layers with the exact global total
  (:func:`dstbench.core.global_select.global_topk`, with the ``--min-active`` collapse guard, reported);
* ``uniform``/``er``/``erk``: a ranking inside each layer at the plan's per-layer counts, which is
  Synaptic-Flow's ``--scope local`` (the method report says ``"scope": "layer"``).

Shared steps::

    copy = deepcopy(model)                 # scoring never touches the trained model or its BN statistics
    S_l  = score(copy, one init batch)     # per method, below
    M    = global_topk(S, total, min_active) or per-layer top-k_l(S_l)
    train with M fixed                     # density_policy="global": the total is exact, layers free

Cost: the masks never change, so training costs 3 f_S per sample (``dense_grad="never"``); the one-shot
scoring passes are not charged (:mod:`dstbench.engine.cost`).

SNIP (Lee et al., ICLR 2019, eq. 6; official namhoonlee/snip-public ``snip/model.py: get_sparse_mask``,
``create_sparse_mask``)::

    g = dL/dtheta on one training batch (the network in inference mode, ``is_train=False``)
    S = |theta * g|                        # = |dL/dc| at c = 1; the code's division by sum(S) does not
                                           # change the ranking and is left out
    keep the top-k of S

GraSP (Wang et al., ICLR 2020, Alg. 1; official alecwangcq/GraSP ``pruner/GraSP.py: GraSP``)::

    D   = up to samples_per_class examples of each class (GraSP_fetch_data), class by class
    re-initialise every Linear weight of the copy (xavier normal), train mode
    g   = sum over the halves D1, D2 of grad CE(f(D_h)/T, y_h)                 # T = 200
    Hg  = sum over the halves of grad_theta [ g_stopped . grad CE(f(D_h)/T, y_h) ]  # double backprop
    S   = -theta * Hg                       # GraSP's score (its |sum S| normalisation: ranking unchanged)
    remove the largest S: keep the k smallest S, i.e. the top-k of theta * Hg

SynFlow (Tanaka et al., NeurIPS 2020, Alg. 1; official ganguli-lab/Synaptic-Flow ``Pruners/pruners.py:
SynFlow``, ``prune.py: prune_loop``)::

    copy in eval mode; every floating tensor of its state dict -> |.|   # linearise (BN included)
    M = 1
    for r = 1..rounds (100):
        theta = |theta_0| * M
        R = 1^T f(1)                           # one all-ones input
        S = |theta * dR/dtheta|
        M = top-k_r of S among M,  k_r = N - floor((1 - d^(r/rounds)) N)   # exponential schedule

    d is the *nominal* density, as prune_loop's ``sparsity**((epoch + 1) / epochs)`` and
    ``_global_mask``'s ``int((1 - sparsity) * N)``: ``1 - s`` over all sparsified weights (global), each
    layer's planned density (per layer); the last round lands exactly on the plan's counts.

Departures: the scores are computed in float64 for SynFlow (the official ``model.double()`` is
commented out; float32 products underflow on deep nets at extreme sparsity), and only conv/FC weights
are pruned (snip-public also prunes biases). GraSP's CIFAR recipe draws ``samples_per_class`` (10) per
class from the data loader; the engine hands one training batch, so the samples come from that batch
(fewer when the batch holds fewer, reported as ``samples``) and ``num_iters`` is 1, as in the CIFAR
configs. Thresholds: GraSP keeps scores ``<=`` the smallest score it removes, so it keeps that one too
(always at least one weight over budget, more with ties), and Synaptic-Flow prunes ``<=`` its
threshold, so its total drifts by the ties; here the total is exact and ties break by
:func:`dstbench.core.selection.ranked_indices`. SynFlow reads the init batch only for the input shape, as
the official code reads one loader batch.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from dstbench.core.global_select import global_topk, layerwise_topk
from dstbench.core.hparams import PositiveInt, Range
from dstbench.core.registry import register_method
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, RunView, UpdateContext

__all__ = ["PruneAtInit", "SNIP", "GraSP", "SynFlow", "grasp_samples"]
log = logging.getLogger(__name__)


@dataclass
class PruneAtInit(MaskUpdater):
    """Score once before training, keep the best (globally or per layer, by the plan), never update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._scope = "layer"
        self._min_active = 1
        self._report: dict[str, Any] = {}

    @property
    def needs(self) -> Needs:
        return Needs(init_batch=True, density_policy="global")

    def setup(self, run: RunView) -> None:
        self._scope = "global" if run.plan.distribution == "global" else "layer"
        self._min_active = run.plan.min_active

    def scores(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Per sparsified layer, the score whose largest entries are kept."""
        raise NotImplementedError

    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        masks = self.select(self.scores(ctx), ctx.sparse_layers)
        self.warn_collapse()
        return masks

    def warn_collapse(self) -> None:
        """Say in the run's log when the global threshold collapsed layers (also in ``report()``)."""
        clamped = list(self._report.get("clamped_layers", {}))
        collapsed = self._report.get("collapsed_layers", [])
        if clamped or collapsed:
            log.warning(
                "%s: the global threshold leaves %d layer(s) below min_active=%d, clamped to it: %s; empty layers: %s",
                self.name, len(clamped), self._min_active, ", ".join(clamped) or "none", ", ".join(collapsed) or "none",
            )

    def select(
        self,
        scores: dict[str, torch.Tensor],
        layers: list[MaskedLayer],
        *,
        counts: dict[str, int] | None = None,
        total: int | None = None,
        eligible: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masks from scores in this run's scope: the global top-``total`` (default: the plan's total)
        or each layer's top-``counts[name]`` (default: the plan's counts). ``eligible`` keeps pruned
        entries pruned in iterative pruning."""
        counts = counts or {layer.name: layer.k for layer in layers}
        if self._scope == "global":
            total = sum(layer.k for layer in layers) if total is None else total
            chosen = global_topk(scores, total, min_active=self._min_active, eligible=eligible)
            self._report = chosen.report()
            return chosen.masks
        if eligible is None:
            masks = layerwise_topk(scores, counts)
        else:
            masks = {name: topk_mask(score, counts[name], eligible=eligible[name]) for name, score in scores.items()}
        self._report = {"scope": "layer", "layer_active": {name: int(mask.sum()) for name, mask in masks.items()}}
        return masks

    def report(self) -> dict[str, Any]:
        return dict(self._report)

    def state_dict(self) -> dict[str, Any]:
        return {"selection": dict(self._report)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._report = dict(state.get("selection", {}))


def _scoring_copy(
    model: nn.Module | None, layers: list[MaskedLayer], dtype: torch.dtype | None = None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A deep copy of the model (in ``dtype``) and its prunable weights by layer name: scoring leaves
    the trained model, its gradients and its BatchNorm statistics alone."""
    if model is None:
        raise ValueError("pruning at initialisation needs the model in its context")
    clone = copy.deepcopy(model)
    if dtype is not None:
        clone.to(dtype)
    modules = dict(clone.named_modules())
    weights = {}
    for layer in layers:
        weight = modules[layer.name].weight
        assert isinstance(weight, torch.Tensor)
        weight.requires_grad_(True)
        weights[layer.name] = weight
    return clone, weights


def _init_batch(ctx: UpdateContext) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.batch is None:
        raise ValueError("pruning at initialisation needs the init batch")
    return ctx.batch


@register_method("snip")
@dataclass
class SNIP(PruneAtInit):
    """SNIP: connection sensitivity |theta * dL/dtheta| on one batch, top-k, fixed."""

    paper = "Lee et al., SNIP: Single-shot Network Pruning based on Connection Sensitivity, ICLR 2019"

    def scores(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        x, y = _init_batch(ctx)
        clone, weights = _scoring_copy(ctx.model, ctx.sparse_layers)
        clone.eval()  # snip-public scores with is_train=False
        loss_fn = ctx.loss_fn or nn.functional.cross_entropy
        loss = loss_fn(clone(x).float(), y)
        grads = torch.autograd.grad(loss, list(weights.values()))
        return {name: (w.detach() * g).abs() for (name, w), g in zip(weights.items(), grads)}


def grasp_samples(targets: torch.Tensor, samples_per_class: int) -> torch.Tensor:
    """Indices of GraSP_fetch_data's selection from one batch: the first ``samples_per_class`` of each
    class in batch order, concatenated class by class (lowest label first)."""
    parts = [(targets == c).nonzero().squeeze(1)[:samples_per_class] for c in torch.unique(targets).tolist()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


@register_method("grasp")
@dataclass
class GraSP(PruneAtInit):
    """GraSP: remove the weights whose removal most reduces gradient flow, -theta * Hg largest first."""

    paper = "Wang et al., Picking Winning Tickets Before Training by Preserving Gradient Flow, ICLR 2020"
    temperature: Annotated[float, Range(gt=0)] = 200.0
    """T: logits are divided by T before the loss (pruner/GraSP.py ``T=200``)."""
    samples_per_class: PositiveInt = 10
    """Examples per class drawn from the init batch (the CIFAR configs' 10; the function default is 25)."""
    reinit_fc: bool = True
    """Re-initialise the copy's Linear weights (xavier normal) before scoring, as ``reinit=True`` does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._samples = 0

    def scores(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        x, y = _init_batch(ctx)
        chosen = grasp_samples(y, self.samples_per_class).to(x.device)
        x, y = x.index_select(0, chosen), y.index_select(0, chosen)
        self._samples = int(y.numel())
        clone, weights = _scoring_copy(ctx.model, ctx.layers)  # g and Hg span every conv/FC weight
        clone.train()  # the official copy is not put in eval mode
        if self.reinit_fc:
            with torch.no_grad():
                for module in clone.modules():
                    if isinstance(module, nn.Linear):
                        # drawn on the CPU from the run's seeded generator, so CPU and CUDA agree
                        fresh = nn.init.xavier_normal_(torch.empty(module.weight.shape), generator=ctx.rng)
                        module.weight.copy_(fresh)
        params = list(weights.values())
        n = int(y.numel())
        halves = [(x[a:b], y[a:b]) for a, b in ((0, n // 2), (n // 2, n)) if b > a]
        g = [torch.zeros_like(p) for p in params]
        for xs, ys in halves:
            loss = nn.functional.cross_entropy(clone(xs).float() / self.temperature, ys)
            for acc, grad in zip(g, torch.autograd.grad(loss, params)):
                acc += grad
        hg = [torch.zeros_like(p) for p in params]
        for xs, ys in halves:
            loss = nn.functional.cross_entropy(clone(xs).float() / self.temperature, ys)
            grad_f = torch.autograd.grad(loss, params, create_graph=True)
            z = sum((stopped * grad).sum() for stopped, grad in zip(g, grad_f))
            assert isinstance(z, torch.Tensor)
            for acc, grad in zip(hg, torch.autograd.grad(z, params)):
                acc += grad
        keep = {name: (w.detach() * h) for (name, w), h in zip(weights.items(), hg)}
        return {layer.name: keep[layer.name] for layer in ctx.sparse_layers}

    def report(self) -> dict[str, Any]:
        return {**super().report(), "samples": self._samples}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "samples": self._samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._samples = int(state.get("samples", 0))


def synflow_keep(numel: int, density: float, round_: int, rounds: int) -> int:
    """Active count after round ``round_`` of ``rounds`` under the exponential schedule: Synaptic-Flow
    prunes ``int((1 - d^(r/R)) * N)`` (the caller puts the last round exactly on the plan)."""
    return numel - math.floor((1.0 - density ** (round_ / rounds)) * numel)


@register_method("synflow")
@dataclass
class SynFlow(PruneAtInit):
    """SynFlow: data-free, iteratively conserve synaptic flow R = 1^T (prod |W|) 1."""

    paper = "Tanaka et al., Pruning neural networks without any data by iteratively conserving synaptic flow, NeurIPS 2020"
    rounds: PositiveInt = 100
    """Scoring rounds; the density follows d^(r/rounds) (``--prune-epochs 100``, exponential schedule)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._density = 1.0

    def scores(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError("SynFlow scores change every round; see init_masks")

    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        x, _ = _init_batch(ctx)
        layers = ctx.sparse_layers
        clone, weights = _scoring_copy(ctx.model, layers, torch.float64)
        clone.eval()
        with torch.no_grad():
            for tensor in clone.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        original = {name: w.detach().clone() for name, w in weights.items()}
        masks = {layer.name: torch.ones_like(layer.mask) for layer in layers}
        ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
        first_clamp: dict[str, dict[str, int]] = {}
        for r in range(1, self.rounds + 1):
            scores = self.synaptic_saliency(clone, weights, original, masks, ones)
            counts, round_total = self.round_budget(layers, r)
            masks = self.select(scores, layers, counts=counts, total=round_total, eligible=masks)
            for name, entry in self._report.get("clamped_layers", {}).items():
                first_clamp.setdefault(name, {"global_topk": entry["global_topk"], "first_round": r})
        if first_clamp:
            # A layer held up by the guard in an early round keeps its min_active weights to the end,
            # whether or not they pass the last round's threshold: report every round's clamps.
            active = self._report["layer_active"]
            self._report["clamped_layers"] = {name: {**entry, "active": active[name]} for name, entry in first_clamp.items()}
        self.warn_collapse()
        return masks

    def setup(self, run: RunView) -> None:
        super().setup(run)
        self._density = 1.0 - run.plan.sparsity

    def round_budget(self, layers: list[MaskedLayer], round_: int) -> tuple[dict[str, int], int]:
        """Per-layer counts and the global total kept after ``round_``, from the nominal density as
        Synaptic-Flow's ``prune_loop`` (not the plan's rounded K/N, which moves single weights in about
        half the rounds); never below the plan, and exactly the plan after the last round."""
        if round_ == self.rounds:
            return {layer.name: layer.k for layer in layers}, sum(layer.k for layer in layers)
        counts = {
            layer.name: max(layer.k, synflow_keep(layer.numel, layer.target.density, round_, self.rounds))
            for layer in layers
        }
        total = synflow_keep(sum(layer.numel for layer in layers), self._density, round_, self.rounds)
        return counts, max(total, sum(layer.k for layer in layers))

    @staticmethod
    def synaptic_saliency(
        clone: nn.Module,
        weights: dict[str, torch.Tensor],
        original: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        ones: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """S = |theta * dR/dtheta| with theta = |theta_0| * M and R the sum of the linearised output."""
        with torch.no_grad():
            for name, weight in weights.items():
                weight.copy_(original[name] * masks[name])
        flow = clone(ones).sum()
        grads = torch.autograd.grad(flow, list(weights.values()))
        return {name: (w.detach() * g).abs() for (name, w), g in zip(weights.items(), grads)}
