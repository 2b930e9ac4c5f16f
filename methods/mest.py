"""MEST: Memory-Economic Sparse Training (Yuan et al., NeurIPS 2021), MEST+EM and MEST+EM&S.

Read from the official code (``prune_utils/retrain.py: SparseTraining.update_mask``,
``prune_utils/utils_pr.py: weight_pruning, weight_growing``, ``scripts/resnet32/EM*/``)::

    at the START of epoch e with e % F == 0 (F = 5; e = 0 included, i.e. before the first step):
        phase = number of phase boundaries <= e          # 90 and 120 of 160 epochs
        for each sparsified layer l (target sparsity s, n weights):
            imp  = |theta| + lambda_M * |grad|           # grad is zero there in the official code
            keep = top-(n - round(lo * n)) of imp        # prune to  lo = s + x[phase] * (1 - s)
            grow = round(n - up * n) - |keep| uniformly random inactive positions (just-pruned allowed)
                                                         # grow to   up = s - g[phase]
            M    = keep | grow                           # grown weights start at 0 (engine)

MEST+EM: ``x = (0.2, 0.1, 0)``, ``g = 0``; at s = 0.9 that prunes to 0.92/0.91/0.90 and grows back to
0.90 (the scripts' LOWER/UPPER bounds), at s = 0.95 to 0.96/0.955/0.95. The mutation is thus 20 % /
10 % / 0 % of the *target* active count, a fixed fraction ``x * (1 - s)`` of the whole layer.

MEST+EM&S (soft memory bound, "grow first, prune later"): ``x = 0``, ``g = (0.05, 0.025, 0)``: prune to
s, then grow 5 % / 2.5 % / 0 % of the layer above it, so newly grown weights train for F epochs before
the next prune can remove them (density 15 / 12.5 / 10 % at s = 0.9; 10 / 7.5 / 5 % at s = 0.95).

The rule that generalises the scripts' bounds to any s: both listed rows (s = 0.9 and 0.95) agree with
an EM over-prune *relative* to the density, ``(1 - s) * x``, and an EM&S over-growth *absolute* in the
layer, ``g``. Per-layer targets (ERK) use each layer's own s_l. Counts are rounded to the nearest
integer and clipped to the layer.

Deviation: the engine zeroes the momentum of pruned and grown weights (as for every method); the official code
leaves the buffers of pruned weights to decay geometrically, since their gradients are masked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Fraction, NonNegative, PositiveInt
from dstbench.core.registry import register_method
from dstbench.core.schedules import Periodic, Piecewise
from dstbench.core.selection import topk_mask
from dstbench.core.updater import MaskedLayer, MaskUpdater, Needs, RunView, StepInfo, UpdateContext

__all__ = ["MEST", "MESTSoftBound"]
log = logging.getLogger(__name__)


@register_method("mest")
@dataclass
class MEST(MaskUpdater):
    """MEST+EM: magnitude prune below the target, random regrowth back to it, in decaying phases."""

    paper = "Yuan et al., MEST: Accurate and Fast Memory-Economic Sparse Training Framework on the Edge, NeurIPS 2021"
    cadence_fields = {"update_frequency": "epochs"}

    update_frequency: PositiveInt = 5
    """F (``--sp-mask-update-freq``): epochs between updates, each at the start of an epoch, epoch 0 included."""
    phase_boundaries: tuple[Fraction, ...] = (90 / 160, 120 / 160)
    """``--mask-update-decay-epoch 90-120`` of 160 epochs, as fractions of the run: where phases 1, 2, ... start."""
    prune_extra: tuple[Fraction, ...] = (0.2, 0.1, 0.0)
    """Per phase: over-prune as a fraction of the layer's target density, prune-to = s + x(1-s) (LOWER_BOUND)."""
    grow_extra: tuple[Fraction, ...] = (0.0, 0.0, 0.0)
    """Per phase: over-grow as a fraction of the whole layer, grow-to = s - g (UPPER_BOUND). EM: none."""
    mest_lambda: NonNegative = 0.0
    """lambda_M (``--sp-lmd``) of the importance |theta| + lambda_M |grad|; 0 in every official script."""
    mest_grad: Literal["zero", "current_batch_sparse"] = "zero"
    """``zero``: as the official code, whose gradient is already cleared at epoch start (pure magnitude);
    ``current_batch_sparse``: the masked gradient of the last step (the first author's fork)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mest_lambda and self.mest_grad == "zero":
            log.warning("%s: mest_lambda has no effect with mest_grad='zero' (the gradient is zero then)", self.name)
        self.active_history: list[tuple[int, int]] = []
        """(boundary, active weights in all sparsified layers) after every update: the density timeline."""
        self._total_steps = 0
        self._total_weights = 0

    def validate(self) -> None:
        bounds = self.phase_boundaries
        if any(b == 0.0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ConfigError(f"{self.name}: phase_boundaries must increase within (0, 1], got {bounds}")
        for name in ("prune_extra", "grow_extra"):
            values = getattr(self, name)
            if len(values) != len(bounds) + 1:
                raise ConfigError(f"{self.name}: {name} needs {len(bounds) + 1} values (one per phase), got {values}")

    def state_dict(self) -> dict[str, Any]:
        return {"active_history": list(self.active_history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.active_history = [(int(boundary), int(active)) for boundary, active in state["active_history"]]

    def setup(self, run: RunView) -> None:
        self._total_steps = run.total_steps
        self._total_weights = sum(layer.numel for layer in run.sparse_layers)
        self.active_history = [(0, sum(layer.k for layer in run.sparse_layers))]

    # -- schedule ----------------------------------------------------------------------------------
    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.update_frequency, unit="epochs", at_start=True)

    def phase(self, info: StepInfo) -> int:
        """Index of the phase the epoch starting now belongs to (MEST's ``bound_index``)."""
        return Piecewise(self.phase_boundaries, self.prune_extra).phase(info.next_epoch, info.total_epochs)

    # -- counts and scores -------------------------------------------------------------------------
    def keep_count(self, layer: MaskedLayer, phase: int) -> int:
        """Active weights left after pruning to s + x(1-s): the target minus x(1-s) of the layer."""
        over_prune = round(self.prune_extra[phase] * layer.target.density * layer.numel)
        return layer.k - min(layer.k, over_prune)

    def grow_to_count(self, layer: MaskedLayer, phase: int) -> int:
        """Active weights after growing to s - g: the target plus g of the layer."""
        return min(layer.numel, layer.k + round(self.grow_extra[phase] * layer.numel))

    def importance(self, ctx: UpdateContext, layer: MaskedLayer) -> torch.Tensor:
        """MEST's |theta| + lambda_M |grad|, with the sparse (masked) gradient of the last step."""
        score = layer.weight.detach().abs()
        if self.mest_grad == "current_batch_sparse" and self.mest_lambda:
            score = score + self.mest_lambda * ctx.grad(layer).abs()
        return score

    # -- update ------------------------------------------------------------------------------------
    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        phase = self.phase(ctx.info)
        new_masks = {}
        for layer in ctx.sparse_layers:
            keep = topk_mask(
                self.importance(ctx, layer), self.keep_count(layer, phase), eligible=layer.mask, prefer=layer.mask
            )
            n_grow = self.grow_to_count(layer, phase) - int(keep.sum())
            grow = topk_mask(ctx.uniform(layer.weight), n_grow, eligible=~keep)
            new_masks[layer.name] = keep | grow
        self.active_history.append((ctx.info.step + 1, sum(int(mask.sum()) for mask in new_masks.values())))
        return new_masks

    # -- reporting ---------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Density of the sparsified layers averaged over training steps, from the masks actually used.

        EM&S exceeds the target between prune and grow, so its training cost (3 f_S(t)
        averaged) needs this number rather than the nominal sparsity.
        """
        if not self._total_steps or not self._total_weights:
            return {}
        starts = [start for start, _ in self.active_history] + [self._total_steps]
        weighted = sum(active * (end - start) for (start, active), end in zip(self.active_history, starts[1:]))
        peak = max(active for _, active in self.active_history)
        return {
            "time_averaged_density": weighted / (self._total_steps * self._total_weights),
            "peak_density": peak / self._total_weights,
        }


@register_method("mest-ems")
@dataclass
class MESTSoftBound(MEST):
    """MEST+EM&S: prune to the target, then grow above it (soft memory bound)."""

    paper = "Yuan et al., MEST (+EM&S, soft memory bound), NeurIPS 2021"

    prune_extra: tuple[Fraction, ...] = (0.0, 0.0, 0.0)
    """Per phase: over-prune as a fraction of the target density; EM&S prunes exactly to s."""
    grow_extra: tuple[Fraction, ...] = (0.05, 0.025, 0.0)
    """Per phase: over-grow as a fraction of the whole layer: density 15 / 12.5 / 10 % at s = 0.9."""

    @property
    def needs(self) -> Needs:
        return Needs(density_policy="at_least")
