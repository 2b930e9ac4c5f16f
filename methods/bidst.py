"""BiDST: bi-level dynamic sparse training (Ji, Li, Yin, Qin, Yuan, Guo, Liu, Ma; ICML 2024).

The paper publishes no code; this is a reconstruction from its eqs. 4-11, Algorithm 1 and Table A.1 (the
default), with every choice the paper leaves open as a hyper-parameter (docs/bidst.md). Per sparsified layer: the active mask ``M`` (the engine's mask,
``|M| = k``), a search set ``S`` (``|S| = m``, disjoint from ``M``) and continuous scores ``psi``, exactly
0 outside ``P = M | S``::

    init:  M random with |M| = k;  S random m-subset of ~M;  psi = 0   ("scaled": psi = M * theta)
           m = min(n - k, round(S/(1-s) * d * n))     # d: unrounded layer density, s: global sparsity

    every step t, from the ONE backward pass (G = dL/d(M*theta), dense; alpha_t = current LR):
        D = sign(psi) * G * theta                 # d loss / d psi, straight-through |psi|
        I = -G / lam                              # implicit-gradient term of eq. 9
        psi -= alpha_t * P * (D + I)              # upper level, eq. 11 (theta: pre-step weights)
        grad_theta = M * G + lam * M * theta      # lower level, eq. 10 (then SGD with weight decay)

    start of epoch e, 0 < e < E, e % F == 0 (Algorithm 1's "if F"):
        M' = top-k of |psi| within P              # ties: current M first, then lower index
        psi *= M'                                 # grown/dropped weights and momentum -> 0 (engine)
        S' = random m-subset of ~M'               # just-dropped entries are eligible

Search-space entries have theta = 0, so D = 0 there and they learn only through ``+alpha_t * G / lam``:
"their corresponding weights and weight gradients are zeros" yet "this part of the mask is learning"
(App. A). Nothing needs a second backward pass; the extra cost is the weight-gradient GEMM on ``S``,
declared through ``Needs.gradient_density`` so the FLOP accountant charges ``2 f_A + f_(A|S)``.

Numerics: ``psi`` is stored as is, in float32. Storing ``lam * psi`` instead is a
global rescale: it neither changes the ranking nor float32's *relative* resolution, so it would not
rescue the direct term ``D`` (about ``lam * |theta|`` of ``I``, below the resolution of a large ``psi``);
keeping ``psi`` literal makes the state readable and the update formula checkable term by term.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Positive, PositiveInt, Range
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, RunView, UpdateContext, descend_

__all__ = ["BiDST", "LayerScores", "table_search_space", "search_space_size"]

# Table A.1's S at s = 0.90 / 0.95 / 0.98, applied to other sparsities by the next listed one.
SEARCH_SPACE_TABLES: dict[str, tuple[float, float, float]] = {
    "table_a1": (0.05, 0.03, 0.02),
    "mobilenetv2": (0.08, 0.05, 0.04),
}
BIP_SCORE_MOMENTUM = 0.9
"""BiP's mask optimizer: SGD with momentum 0.9 and the weights' weight decay (BiP ``train.py``)."""


def table_search_space(sparsity: float, table: str = "table_a1") -> float:
    """S for a global sparsity: the Table A.1 value of the next listed sparsity at or above it."""
    at_90, at_95, at_98 = SEARCH_SPACE_TABLES[table]
    if sparsity <= 0.90:
        return at_90
    return at_95 if sparsity <= 0.95 else at_98


def search_space_size(layer: MaskedLayer, search_space: float, sparsity: float, alloc: str) -> int:
    """m_l: ``proportional`` spreads S*N over layers like the active weights (ERK-aware), the literal
    reading takes S of every layer. Never more than the layer's inactive entries."""
    if alloc == "proportional":
        wanted = search_space / (1.0 - sparsity) * layer.target.density * layer.numel
    else:
        wanted = search_space * layer.numel
    return min(layer.numel - layer.k, round(wanted))


@dataclass
class LayerScores:
    """BiDST's state for one sparsified layer (what ``--resume`` saves)."""

    scores: torch.Tensor
    """psi: float32, exactly 0 outside M | S."""
    search: torch.Tensor
    """S: bool, disjoint from the layer's mask M."""
    momentum: torch.Tensor | None = None
    """psi's momentum buffer (``score_optimizer="bip"`` only)."""

    def to_state(self) -> dict[str, torch.Tensor | None]:
        return {"scores": self.scores, "search": self.search, "momentum": self.momentum}


@register_method("bidst")
@dataclass
class BiDST(MaskUpdater):
    paper = "Ji et al., Advancing Dynamic Sparse Training by Exploring Optimization Opportunities, ICML 2024"
    cadence_fields = {"update_frequency": "epochs"}

    lam: Positive = 1e-4
    """lambda of eqs. 4/9/10 (Table A.1: 1e-4 CIFAR, 5e-5 ImageNet): the lower level's extra L2 on active
    weights and the 1/lambda weight of the implicit gradient; smaller means more mask churn (App. C)."""
    search_space: Annotated[float, Range(ge=0.0, lt=1.0)] | None = None
    """S, extra learnable mask entries as a fraction of all entries; None = Table A.1 by global sparsity."""
    search_space_table: Literal["table_a1", "mobilenetv2"] = "table_a1"
    """Which Table A.1 column the automatic S uses (MobileNet-v2 learns a larger space: 0.08/0.05/0.04)."""
    update_frequency: PositiveInt = 8
    """F: topology updates every F units (Table A.1: 8 epochs CIFAR, 5 ImageNet)."""
    update_unit: Literal["epochs", "iterations"] = "epochs"
    """Unit of F. MEST's ``sp_mask_update_freq`` is in epochs; iterations suit toy problems."""
    update_end_frac: Annotated[float, Range(gt=0.0, le=1.0)] = 1.0
    """No topology update after this fraction of training (the paper never stops)."""
    ig_form: Literal["paper_eq9", "bip", "bip_code"] = "paper_eq9"
    """Implicit-gradient term: literal eq. 9 (-G/lam); BiP paper's -G*(M*G)/lam, or BiP code's
    -lam*D*(M*G). Both BiP forms give S entries no signal, so their masks freeze."""
    rank_by: Literal["abs", "signed"] = "abs"
    """Binarize by top-k of |psi| (BiP/HYDRA, sign-invariant under eq. 9) or of psi itself."""
    score_init: Literal["zero", "scaled"] = "zero"
    """psi_0 = 0, or BiP's ``--scaled-score-init`` psi_0 = M_0 * theta_0."""
    search_space_alloc: Literal["proportional", "per_layer_literal"] = "proportional"
    """m_l proportional to layer density (Sum m_l ~ S*N under ERK), or round(S*n_l) per layer."""
    search_space_resample: Literal["random_each_update", "keep_runners_up"] = "random_each_update"
    """S' drawn afresh from ~M', or keep S's unselected entries (and their scores), filling the
    rest at random."""
    score_reset_on_update: bool = False
    """True: every psi restarts at 0 after a topology update; False: scores of the new M persist."""
    score_optimizer: Literal["sgd", "bip"] = "sgd"
    """Plain step psi -= alpha_t * grad (eq. 11), or BiP's SGD with momentum 0.9 and the weights' wd."""
    second_pass: bool = False
    """Strict eq. 11: recompute G at the post-step theta_t on the same batch (one more forward/backward)
    instead of reusing the step's G at theta_(t-1)."""
    gumbel: Literal["none", "topk", "st_sigmoid"] = "none"
    """Where Gumbel noise enters (unspecified by the paper): nowhere; sampling M' = top-k of
    log|psi| + tau*g at updates; or rescaling D by the ST-Gumbel-sigmoid slope every step."""
    gumbel_temperature: Positive = 1.0
    """tau of the Gumbel options."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layers: dict[str, LayerScores] = {}
        """Persistent per-layer state (scores, search set, score momentum), by layer name."""
        self._search_space = 0.0
        self._search_sizes: dict[str, int] = {}
        self._weight_decay: dict[str, float] = {}
        self._layers: list[MaskedLayer] = []

    def validate(self) -> None:
        if self.gumbel == "topk" and self.rank_by == "signed":
            raise ConfigError("bidst: gumbel=topk samples proportionally to |psi|; it needs rank_by=abs")

    def state_dict(self) -> dict[str, Any]:
        return {"layers": {name: state.to_state() for name, state in self.layers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "layers" not in state:  # a checkpoint from before per-layer state: three name-keyed dicts
            names = state["scores"].keys()
            momentum = state.get("score_momentum", {})
            state = {"layers": {n: {"scores": state["scores"][n], "search": state["search"][n], "momentum": momentum.get(n)} for n in names}}
        self.layers = {name: LayerScores(**layer) for name, layer in state["layers"].items()}

    @property
    def needs(self) -> Needs:
        # G is needed on M | S only: (k + m)/n for sparsified layers (dense elsewhere), once set up.
        density = {layer.name: (layer.k + self._search_sizes[layer.name]) / layer.numel for layer in self._layers}
        return Needs(
            dense_grad="every_step",
            per_step_hook=True,
            step_hook_at="both" if self.second_pass else "before_optimizer",
            gradient_density=density if self._layers else None,
            capturable_hook=self._capture_problem() or True,
        )

    def _capture_problem(self) -> str:
        """Why the per-step work cannot be captured ("" when it can): the strict second pass runs the
        model again, the ST-Gumbel slope ranks a data-dependent subset with fresh host noise."""
        if self.second_pass:
            return "second_pass=True evaluates the loss again on the step's batch"
        if self.gumbel == "st_sigmoid":
            return "gumbel=st_sigmoid ranks a data-dependent subset with the step's generator"
        return ""

    # -- setup -------------------------------------------------------------------------------------
    def setup(self, run: RunView) -> None:
        """Resolve S from the plan's global sparsity and size every layer's search set."""
        sparsity = run.plan.sparsity
        if self.search_space is None:
            self._search_space = table_search_space(sparsity, self.search_space_table)
        else:
            self._search_space = self.search_space
        self._search_sizes = {
            layer.name: search_space_size(layer, self._search_space, sparsity, self.search_space_alloc)
            for layer in run.sparse_layers
        }
        self._layers = run.sparse_layers
        self._weight_decay = {layer.name: run.weight_decay(layer) for layer in run.sparse_layers}

    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Random M (the paper's "random mask psi_0"), a random S beside it, and the initial scores."""
        masks = super().init_masks(ctx)
        assert isinstance(masks, dict)  # the base class's random masks
        for layer in ctx.sparse_layers:
            mask = masks[layer.name].to(layer.weight.device)
            weight = layer.weight.detach().float()
            self.layers[layer.name] = LayerScores(
                scores=weight * mask if self.score_init == "scaled" else torch.zeros_like(weight),
                search=_random_subset(ctx, ~mask, self._search_sizes[layer.name]),
                momentum=torch.zeros_like(weight) if self.score_optimizer == "bip" else None,
            )
        return masks

    # -- schedule ----------------------------------------------------------------------------------
    @cached_property
    def schedule(self) -> Periodic:
        """Start of every F-th epoch (or iteration), never before the first step or after the last."""
        if self.update_unit == "epochs":
            return Periodic(self.update_frequency, unit="epochs", stop=self.update_end_frac)
        return Periodic(self.update_frequency, unit="steps", stop=self.update_end_frac)

    # -- every step --------------------------------------------------------------------------------
    def on_step(self, ctx: UpdateContext) -> None:
        """Before the optimizer step: the upper level from this step's G (unless ``second_pass``), then
        eq. 10's lambda term. After it (``second_pass`` only): strict eq. 11, G recomputed at theta_t
        on the same batch."""
        if ctx.after_optimizer:
            for layer, recomputed in self._gradients_at_current_weights(ctx):
                self._learn_scores(ctx, layer, recomputed, layer.weight.detach())
            return
        for layer in ctx.sparse_layers:
            grad = layer.weight.grad
            if grad is None:
                continue
            weight = layer.weight.detach()  # pre-step theta_(t-1), exactly 0 off M
            if not self.second_pass:
                self._learn_scores(ctx, layer, ctx.grad(layer), weight)
            grad.add_(weight, alpha=self.lam)  # after the scores: they use the loss gradient G only

    def _learn_scores(self, ctx: UpdateContext, layer: MaskedLayer, grad: torch.Tensor, weight: torch.Tensor) -> None:
        """psi -= alpha_t * P * dL/dpsi (eqs. 9 and 11), optionally through BiP's momentum."""
        state = self.layers[layer.name]
        psi = state.scores
        region = layer.mask | state.search
        direct = psi.sign() * grad * weight
        if self.gumbel == "st_sigmoid":
            direct = direct * self._st_sigmoid_slope(ctx, layer, psi, region)
        step = (direct + self._implicit_term(grad, direct, layer.mask)) * region
        if state.momentum is not None:
            momentum = state.momentum
            momentum.mul_(BIP_SCORE_MOMENTUM).add_(step).add_(psi, alpha=self._weight_decay[layer.name])
            step = momentum
        descend_(psi, step, ctx.lr)

    def _implicit_term(self, grad: torch.Tensor, direct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The second term of eq. 9 under the chosen reading (``ig_form``)."""
        if self.ig_form == "paper_eq9":
            return grad / -self.lam
        weight_grad = grad * mask  # grad_theta of the loss: zero on S, where theta is not trained
        if self.ig_form == "bip":
            return grad * weight_grad / -self.lam
        return direct * weight_grad * -self.lam

    def _st_sigmoid_slope(
        self, ctx: UpdateContext, layer: MaskedLayer, psi: torch.Tensor, region: torch.Tensor
    ) -> torch.Tensor:
        """sigma'(z)/tau with z = (|psi| - t_k + g1 - g0)/tau: a straight-through Gumbel-sigmoid gate
        centred on the layer's k-th largest |psi| in P, fresh noise every step."""
        magnitude = psi.abs()
        threshold = torch.topk(magnitude[region], layer.k).values[-1] if layer.k else magnitude.new_zeros(())
        z = (magnitude - threshold + _gumbel(ctx, psi) - _gumbel(ctx, psi)) / self.gumbel_temperature
        gate = torch.sigmoid(z)
        return gate * (1 - gate) / self.gumbel_temperature

    def _gradients_at_current_weights(self, ctx: UpdateContext) -> list[tuple[MaskedLayer, torch.Tensor]]:
        """dL/dW on the step's batch at the post-step weights, leaving no ``.grad`` and no BN statistics
        behind, so that the weight training is exactly what it is without the second pass."""
        if ctx.batch is None or ctx.loss_fn is None or ctx.model is None:
            raise ValueError("bidst second_pass needs the step's batch, model and loss from the engine")
        inputs, targets = ctx.batch
        buffers = [(b, b.clone()) for name, b in ctx.model.named_buffers() if not name.endswith("weight_mask")]
        layers = [layer for layer in ctx.sparse_layers if layer.weight.requires_grad]
        with torch.enable_grad():
            loss = ctx.loss_fn(ctx.model(inputs), targets)
            grads = torch.autograd.grad(loss, [layer.weight for layer in layers], allow_unused=True)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        return [(layer, grad) for layer, grad in zip(layers, grads) if grad is not None]

    # -- topology update ---------------------------------------------------------------------------
    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Binarize: M' = top-k of the scores within P; keep scores where they persist; redraw S."""
        new_masks = {}
        for layer in ctx.sparse_layers:
            state = self.layers[layer.name]
            region = layer.mask | state.search
            new_mask = topk_mask(self._rank_scores(ctx, layer), layer.k, eligible=region, prefer=layer.mask)
            runners_up = self._runners_up(layer, new_mask)
            keep_scores = torch.zeros_like(new_mask) if self.score_reset_on_update else new_mask | runners_up
            state.scores.mul_(keep_scores)
            if state.momentum is not None:
                state.momentum.mul_(keep_scores)
            fill = self._search_sizes[layer.name] - int(runners_up.sum())
            # In place: a captured step keeps reading the search set it was traced with.
            state.search.copy_(runners_up | _random_subset(ctx, ~(new_mask | runners_up), fill))
            new_masks[layer.name] = new_mask
        return new_masks

    def _rank_scores(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        psi = self.layers[layer.name].scores
        if self.rank_by == "signed":
            return psi
        if self.gumbel == "topk":  # Gumbel-top-k: k draws without replacement, P(i) ~ |psi_i|^(1/tau)
            return psi.abs().log() + self.gumbel_temperature * _gumbel(ctx, psi)
        return psi.abs()

    def _runners_up(self, layer: MaskedLayer, new_mask: torch.Tensor) -> torch.Tensor:
        """Search entries not selected, kept for the next interval under ``keep_runners_up``. There are
        at most m of them (|S \\ M'| <= |S|), so all are kept and no ranking among them is needed."""
        if self.search_space_resample == "random_each_update":
            return torch.zeros_like(new_mask)
        return self.layers[layer.name].search & ~new_mask

    # -- cost and reporting ------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        numel = sum(self.layers[name].scores.numel() for name in self._search_sizes)
        searched = sum(self._search_sizes.values())
        return {
            "search_space": self._search_space,
            "search_entries": float(searched),
            "search_fraction": searched / numel if numel else 0.0,
        }


def _random_subset(ctx: UpdateContext, eligible: torch.Tensor, count: int) -> torch.Tensor:
    """A uniformly random ``count``-subset of ``eligible`` from the step's seeded generator (a
    permutation of the candidates: linear time, where ranking random scores would sort all n)."""
    candidates = torch.nonzero(eligible.reshape(-1)).squeeze(1)
    order = torch.randperm(candidates.numel(), generator=ctx.rng)[:count].to(candidates.device)
    chosen = torch.zeros(eligible.numel(), dtype=torch.bool, device=eligible.device)
    chosen[candidates[order]] = True
    return chosen.view(eligible.shape)


def _gumbel(ctx: UpdateContext, like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from the step's seeded generator (uniforms clamped away from 0 and 1)."""
    tiny = torch.finfo(torch.float32).tiny
    uniform = ctx.uniform(like).clamp(tiny, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))

