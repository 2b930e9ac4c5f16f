"""What a method asks of the engine, declared once: the engine computes and keeps what it says, and the
FLOP accountant charges what it says, so behaviour and cost cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Needs", "DenseGradWhen", "DensityPolicy", "StepHookAt"]

DenseGradWhen = Literal["never", "update_steps", "every_step"]
DensityPolicy = Literal["exact", "at_least", "at_most", "global", "scheduled", "scheduled_global"]
StepHookAt = Literal["before_optimizer", "after_optimizer", "both"]


@dataclass(frozen=True)
class Needs:
    """What a method asks of the engine; also the single source of truth for its training cost.

    Attributes:
        dense_grad: when the method reads the gradient of *inactive* entries. ``update_steps`` (RigL)
            costs one dense weight-gradient per update, ``every_step`` (SNFS, BiDST) one per step.
        masked_optimizer: ``False`` keeps gradients and optimizer state dense (SNFS grows by the
            momentum of inactive weights). Weights stay exactly zero off the mask either way.
        init_batch: the method scores weights on data before training (SNIP, GraSP).
        per_step_hook: call :meth:`MaskUpdater.on_step` at every step, at ``step_hook_at``.
        step_hook_at: when ``on_step`` runs: after backward and before the engine masks gradients
            (``before_optimizer``: Top-KAST's penalty, BiDST's scores), after the optimizer step and
            re-masking but before any topology update (``after_optimizer``: BiDST's strict eq. 11), or
            both (``ctx.after_optimizer`` tells them apart).
        density_policy: ``exact`` keeps every layer at its target count; ``at_least`` lets a layer hold
            more (MEST+EM&S grows above the bound between prune and grow); ``at_most`` never more
            (SRigL: a constant fan-in ``floor(k / active neurons)`` per neuron); ``global`` only fixes the
            total (SNFS, DSR move weights across layers); ``scheduled`` follows the per-layer counts of
            :meth:`MaskUpdater.targets` (gradual pruning: GMP); ``scheduled_global`` its total with
            free per-layer counts (GraNet). Both scheduled policies must end at the plan's counts
            (total), which the engine checks.
        sparse: ``False`` for dense training: every layer keeps all its weights.
        backward_set: the method keeps a backward set ``B`` containing the forward mask ``M``
            (:attr:`MaskUpdate.backward`, Top-KAST): the forward pass uses ``M * theta`` only, while
            gradients, weights and optimizer state live on ``B``. The FLOP accountant charges the
            weight-gradient on ``B``.
        skip_optimizer_on_update: the optimizer step is skipped on the steps the topology changes
            (google-research/rigl ``sparse_optimizers.py``: the mask update replaces the weight update
            inside ``tf.cond``).
        reads_momentum: the method reads the optimizer's running average of the gradient (SNFS grows
            by it): SGD's ``momentum_buffer`` or the ``exp_avg`` of the Adam family, LAMB and Lion. The
            trainer refuses an optimizer that keeps none (``--momentum 0``) before anything runs.
        gradient_density: per-layer density of the weight-gradient a ``dense_grad`` method needs, for
            the FLOP accountant (default: dense, or the backward set). BiDST needs it only on its
            active set and search space.
        capturable_hook: ``on_step`` keeps to the captured-step rules (docs/plugins.md, "Per-step hooks
            under --compile"), so ``--compile`` runs it inside the compiled step or the CUDA graph.
            ``False`` (the default, and every plugin written before the rules) runs it eagerly around
            the compiled model; a string also runs it eagerly and says why (BiDST's ``second_pass``).
    """

    dense_grad: DenseGradWhen = "never"
    masked_optimizer: bool = True
    init_batch: bool = False
    per_step_hook: bool = False
    density_policy: DensityPolicy = "exact"
    sparse: bool = True
    backward_set: bool = False
    step_hook_at: StepHookAt = "before_optimizer"
    skip_optimizer_on_update: bool = False
    reads_momentum: bool = False
    gradient_density: Mapping[str, float] | None = field(default=None, hash=False)
    capturable_hook: bool | str = False

    def hook_runs(self, after_optimizer: bool) -> bool:
        """Whether :meth:`MaskUpdater.on_step` runs before (or after) the optimizer step."""
        if not self.per_step_hook:
            return False
        wanted = "after_optimizer" if after_optimizer else "before_optimizer"
        return self.step_hook_at in (wanted, "both")
