"""SR-STE: Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch (Zhou, Ma, Zhu, Liu,
Zhang, Yuan, Sun, Li; ICLR 2021).

Follows the official code, aojunzz/NM-sparsity ``devkit/sparse_ops/sparse_ops.py`` (the autograd
function ``Sparse`` behind ``SparseConv``/``SparseLinear``: the forward multiplies the weight by a mask
of the ``N`` largest ``|w|`` of every ``M``, recomputed from the dense weight at every forward; the
backward passes the gradient straight through and adds ``decay * (1 - mask) * w``), i.e. the paper's
sparse-refined straight-through estimator (eq. 6)::

    W: dense weights, all of them trained
    every iteration t:
        M_t     = the N largest |W_t| of every group of M         (from the dense W, every step)
        W~_t    = M_t ⊙ W_t                                        forward and backward with W~_t
        g_t     = dL/dW~_t                                         straight-through: applied to W
        W_t+1   = W_t - lr · (g_t + lambda_W · (1 - M_t) ⊙ W_t)    sparse-refined term (the optimizer's
                                                                   own weight decay and momentum as usual)

In the engine the dense ``W`` is the method's backward set (``B`` = every weight, as Top-KAST's ``B``):
between steps the weights hold ``M ⊙ W`` and the rest waits in ``weight_reserve``; the gradient of
the masked weight reaches every entry of ``W``; the hook adds the refining term; the mask update after
every step is the N:M top of the updated ``|W|``, the mask the reference computes at the next forward.
The groups are the run's structure (default ``nm:2:4``; :mod:`dstbench.core.structures`, the
reference's grouping along input channels); under another structure the same rule keeps the best
blocks or channels by ``|W|``, and under ``unstructured`` the layer's top-k ``|W|`` (a plain STE).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from dstbench.core.hparams import NonNegative, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic
from dstbench.core.structured_select import structured_topk
from dstbench.core.structures import UNSTRUCTURED, Structure, parse_structure
from dstbench.core.updater import MaskedLayer, MaskUpdate, MaskUpdater, Needs, RunView, UpdateContext

__all__ = ["SRSTE"]


@register_method("sr-ste")
@dataclass
class SRSTE(MaskUpdater):
    paper = "Zhou et al., Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch, ICLR 2021"
    default_structure = "nm:2:4"

    decay: NonNegative = 2e-4
    """lambda_W, the sparse-refined term's strength (``decay = 0.0002`` in the reference's ``Sparse``);
    0 is the plain straight-through estimator."""
    mask_every: PositiveInt = 1
    """Steps between mask recomputations: 1 is the reference (a new mask at every forward); more
    leaves steps with no topology decision, which ``--compile`` runs inside the captured step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._structure: Structure = UNSTRUCTURED

    @property
    def needs(self) -> Needs:
        # The hook is one fixed-shape in-place add with a constant factor: capturable.
        return Needs(dense_grad="every_step", backward_set=True, per_step_hook=self.decay > 0, capturable_hook=True)

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.mask_every)  # the mask follows |W| (at every iteration by default)

    def setup(self, run: RunView) -> None:
        self._structure = parse_structure(run.plan.structure)

    def _masks(self, ctx: UpdateContext) -> MaskUpdate:
        """M = the structured top of the dense |W|; B = every weight (the dense W is trained)."""
        result = MaskUpdate({}, backward={})
        for layer in ctx.sparse_layers:
            result.masks[layer.name] = structured_topk(layer.weight.detach().abs(), self._structure, layer.k, prefer=layer.mask)
            assert result.backward is not None
            result.backward[layer.name] = torch.ones_like(layer.mask)
        return result

    def init_masks(self, ctx: UpdateContext) -> MaskUpdate:
        return self._masks(ctx)  # the initial weights are dense: M_0 from |W_0|

    def update(self, ctx: UpdateContext) -> MaskUpdate:
        return self._masks(ctx)  # the engine has put W's pruned values back: the dense W_t+1

    def on_step(self, ctx: UpdateContext) -> None:
        """g += lambda_W (1 - M) ⊙ W on the dense W, before the optimizer reads g."""
        for layer in ctx.sparse_layers:
            self._refine(layer)

    def _refine(self, layer: MaskedLayer) -> None:
        grad = layer.weight.grad
        if grad is not None:
            grad.add_(layer.weight.detach() * ~layer.mask, alpha=self.decay)
