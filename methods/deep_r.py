"""Deep-R: deep rewiring (Bellec, Kappel, Maass & Legenstein, ICLR 2018).

Follows the paper's Algorithm 1 and the official TensorFlow scripts of guillaumeBellec/deep_rewiring
(``script_mnist_deep_rewiring_with_global_constraint.py``: ``weight_sampler_strict_number``, the
training ops and ``rewiring``). Every connection k has a fixed sign s_k and a parameter theta_k; it is
active iff theta_k >= 0, and then w_k = s_k theta_k::

    init : s_k random (here: the sign of the initial weight, so w_0 is untouched), theta_k = |w_0,k| on
           the initial mask, K = the plan's total of active connections
    every step, for every active k (eta = current learning rate):
        theta_k <- theta_k - eta dE/dtheta_k - eta alpha + sqrt(2 eta T) nu_k,   nu_k ~ N(0, 1)
        theta_k < 0  ->  k becomes dormant (w_k = 0)
    then: reactivate dormant connections uniformly at random until K are active again, theta = epsilon;
          the global-constraint script splits the reactivations over layers by a categorical draw
          with probabilities proportional to each layer's initial connection count

How the sign constraint maps onto dstbench's weights (``w = s * theta``):

* the signs are per-layer state (``positive``: s = +1), saved in ``state_dict`` for ``--resume``;
* the L1 penalty and the Langevin noise are added to the *gradient* of active weights in the per-step
  hook, ``g += alpha * s - sqrt(2 T / eta) * nu``, so that a plain SGD step ``w <- w - eta g`` moves
  theta by exactly the paper's ``-eta alpha + sqrt(2 eta T) nu``;
* an active weight whose sign differs from s after the optimizer step (theta < 0) becomes dormant at the
  update that follows (every ``rewire_every`` steps, 1 = the paper); the engine zeroes it;
* reactivated connections start at ``s * reactivation_value`` through :attr:`MaskUpdate.grown` (the code's
  epsilon = 1e-12; the paper's theta = 0 is ``--hp reactivation_value=0``).

Departures from the reference code:

* **Optimizer.** The paper and the script use plain SGD. With momentum (the trainer's default 0.9) the
  penalty and noise pass through the momentum buffer like weight decay does, so their effective size
  grows by up to 1/(1-momentum); use ``--momentum 0`` for the literal update.
* **Temperature.** The script adds ``lr * N(0, gdnoise)`` per step; the paper writes ``sqrt(2 eta T)``.
  The default ``temperature = 2.5e-11`` gives the script's noise (``gdnoise = 1e-5`` at its ``lr = 0.5``);
  it then scales with sqrt(eta) as in the paper, not with eta as in the script.
* **Exact counts.** The script draws the per-layer reactivation counts from a categorical
  distribution and could ask a layer for more dormant connections than it has; here a layer's draws
  are capped by its dormant connections and the surplus redrawn over the other layers.
* **Just-deactivated connections** are not reactivated at the same update (they would keep their
  negative theta, since the engine keeps the value of an entry active before and after), unless no
  other dormant connection is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from dstbench.core.hparams import NonNegative, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdate, MaskUpdater, Needs, UpdateContext

__all__ = ["DeepR", "split_reactivations"]


def split_reactivations(deficit: int, weights: list[int], caps: list[int], rng: torch.Generator) -> list[int]:
    """Per-layer reactivation counts summing to ``deficit``: categorical draws proportional to
    ``weights`` (the layers' planned counts), each layer capped at ``caps``; draws beyond a cap are
    redrawn over the layers that still have room."""
    if deficit > sum(caps):
        raise ValueError(f"cannot reactivate {deficit} connections: only {sum(caps)} are dormant")
    counts = [0] * len(weights)
    remaining = deficit
    while remaining:
        open_weights = [float(w) if c < cap else 0.0 for w, c, cap in zip(weights, counts, caps)]
        if sum(open_weights) == 0.0:  # only layers with no planned weight have room left
            open_weights = [1.0 if c < cap else 0.0 for c, cap in zip(counts, caps)]
        draws = torch.multinomial(torch.tensor(open_weights, dtype=torch.float64), remaining, replacement=True, generator=rng)
        for i, n in enumerate(torch.bincount(draws, minlength=len(weights)).tolist()):
            counts[i] += min(n, caps[i] - counts[i])
        remaining = deficit - sum(counts)
    return counts


@register_method("deep-r")
@dataclass
class DeepR(MaskUpdater):
    """Sign-constrained weights with L1 and Langevin noise; dormant connections replaced at random."""

    paper = "Bellec, Kappel, Maass & Legenstein, Deep Rewiring: Training very sparse deep networks, ICLR 2018"

    alpha: NonNegative = 1e-5
    """L1 penalty alpha on theta (the scripts' ``l1``)."""
    temperature: NonNegative = 2.5e-11
    """T of the Langevin noise sqrt(2 eta T) nu (the scripts' ``gdnoise=1e-5`` at ``lr=0.5``)."""
    reactivation_value: NonNegative = 1e-12
    """theta of a reactivated connection (the scripts' epsilon; the paper's 0)."""
    rewire_every: PositiveInt = 1
    """Steps between rewirings (1 = after every step, the paper). Larger values only thin out the
    records of very long runs; a weight that crossed zero keeps training until the next rewiring."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive: dict[str, torch.Tensor] = {}
        self.deactivated = 0
        self.rewirings = 0

    @property
    def needs(self) -> Needs:
        # Gradients only on active connections (dormant theta get none); the hook adds L1 and noise.
        return Needs(per_step_hook=True, density_policy="global", capturable_hook=True)

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.rewire_every)

    # -- signs --------------------------------------------------------------------------------------
    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        masks = super().init_masks(ctx)
        assert isinstance(masks, dict)  # the base class's random masks
        for layer in ctx.sparse_layers:
            weight = layer.weight.detach()
            coin = ctx.uniform(weight) < 0.5  # a random sign where the initial weight is exactly 0
            self.positive[layer.name] = torch.where(weight != 0, weight > 0, coin)
        return masks

    def sign(self, layer: MaskedLayer) -> torch.Tensor:
        """s as +-1.0 in the weight's dtype and device."""
        positive = self.positive[layer.name].to(layer.weight.device)
        return torch.where(positive, 1.0, -1.0).to(layer.weight.dtype)

    def dormant(self, layer: MaskedLayer) -> torch.Tensor:
        """Active connections whose theta = s * w fell below 0."""
        return layer.mask & (self.sign(layer) * layer.weight.detach() < 0)

    # -- every step: L1 and Langevin noise on active theta --------------------------------------------
    def step_inputs(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """nu ~ N(0, 1) per sparsified weight, drawn on the host from the step's seeded generator."""
        if not self.temperature:
            return {}
        return {
            layer.name: torch.randn(layer.weight.shape, generator=ctx.rng).to(layer.weight.device, layer.weight.dtype)
            for layer in ctx.sparse_layers
        }

    def on_step(self, ctx: UpdateContext) -> None:
        noise_scale = self._noise_scale(ctx.lr)
        for layer in ctx.sparse_layers:
            grad = layer.weight.grad
            if grad is None:
                continue
            extra = self.alpha * self.sign(layer)
            nu = ctx.step_inputs.get(layer.name)
            if nu is not None and (isinstance(noise_scale, torch.Tensor) or noise_scale):
                extra = extra - noise_scale * nu
            grad.add_(extra * layer.mask)

    def _noise_scale(self, lr: float | torch.Tensor) -> float | torch.Tensor:
        """sqrt(2 T / eta), 0 at eta = 0; a tensor LR (the captured step's) gives a tensor, unread."""
        if isinstance(lr, torch.Tensor):
            return torch.where(lr > 0, torch.sqrt(2.0 * self.temperature / lr), 0.0)
        return math.sqrt(2.0 * self.temperature / lr) if lr > 0 else 0.0

    # -- rewiring -------------------------------------------------------------------------------------
    def update(self, ctx: UpdateContext) -> MaskUpdate:
        layers = ctx.sparse_layers
        if not layers:
            return MaskUpdate({})
        alive = [layer.mask & ~self.dormant(layer) for layer in layers]
        deficit = sum(layer.k for layer in layers) - sum(int(a.sum()) for a in alive)
        candidates = [~layer.mask for layer in layers]
        if deficit > sum(int(c.sum()) for c in candidates):  # only just-deactivated ones are left
            candidates = [~a for a in alive]
        counts = split_reactivations(deficit, [layer.k for layer in layers], [int(c.sum()) for c in candidates], ctx.rng)
        result = MaskUpdate({})
        for layer, keep, eligible, n in zip(layers, alive, candidates, counts):
            result.masks[layer.name] = keep | topk_mask(ctx.uniform(layer.weight), n, eligible=eligible)
            result.grown[layer.name] = self.sign(layer) * self.reactivation_value
        self.deactivated += deficit
        self.rewirings += 1
        return result

    # -- state and report -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "positive": {name: p.clone() for name, p in self.positive.items()},
            "deactivated": self.deactivated,
            "rewirings": self.rewirings,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.positive = {name: p.clone() for name, p in state["positive"].items()}
        self.deactivated = int(state["deactivated"])
        self.rewirings = int(state["rewirings"])

    def report(self) -> dict[str, Any]:
        return {
            "rewirings": self.rewirings,
            "deactivated": self.deactivated,
            "mean_deactivated_per_rewiring": self.deactivated / self.rewirings if self.rewirings else 0.0,
        }
