"""The ``MaskUpdater`` contract: a method owns its decisions, the engine owns every invariant.

A method is a dataclass whose fields are its hyper-parameters (with the paper's defaults), so configs
and ``--hp name=value`` set them by name. It answers four questions and nothing else:

* what it *needs* (:class:`Needs`): a dense gradient and when, a batch at initialisation, a per-step
  hook, whether layer counts may drift. That one declaration drives both the engine (what to compute and
  keep) and the FLOP accountant (what to charge), so behaviour and cost cannot disagree;
* the initial masks (:meth:`MaskUpdater.init_masks`, random with exact counts by default);
* *when* to change the topology (:meth:`MaskUpdater.is_update_step`);
* *what* the new masks are (:meth:`MaskUpdater.update`), usually by scoring and calling the shared
  :func:`dstbench.selection.topk_mask` kernel.

The engine (``dstbench.engine``) then zeroes pruned weights and their optimizer state, zero-initialises
grown weights, checks the counts, and records the topology change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from .distributions import LayerTarget

if TYPE_CHECKING:
    from .engine import SparseEngine

__all__ = [
    "Needs",
    "StepInfo",
    "MaskedLayer",
    "UpdateContext",
    "MaskUpdater",
    "random_mask",
]

DenseGradWhen = Literal["never", "update_steps", "every_step"]
DensityPolicy = Literal["exact", "at_least", "global"]


@dataclass(frozen=True)
class Needs:
    """What a method asks of the engine; also the single source of truth for its training cost.

    Attributes:
        dense_grad: when the method reads the gradient of *inactive* entries. ``update_steps`` (RigL)
            costs one dense weight-gradient per update, ``every_step`` (SNFS, BiDST) one per step.
        masked_optimizer: ``False`` keeps gradients and optimizer state dense (SNFS grows by the
            momentum of inactive weights). Weights stay exactly zero off the mask either way.
        init_batch: the method scores weights on data before training (SNIP, GraSP).
        per_step_hook: call :meth:`MaskUpdater.on_step` after every backward pass.
        density_policy: ``exact`` keeps every layer at its target count; ``at_least`` lets a layer hold
            more (MEST+EM&S grows above the bound between prune and grow); ``global`` only fixes the
            total (DSR moves weights across layers).
        sparse: ``False`` for dense training: every layer keeps all its weights.
    """

    dense_grad: DenseGradWhen = "never"
    masked_optimizer: bool = True
    init_batch: bool = False
    per_step_hook: bool = False
    density_policy: DensityPolicy = "exact"
    sparse: bool = True


@dataclass(frozen=True)
class StepInfo:
    """Where training is, from the point of view of the step that just finished.

    ``step`` is the 0-based index of the step just taken, or ``-1`` before the first step; an update
    decided at ``step`` takes effect from step ``step + 1`` on.
    """

    step: int
    steps_per_epoch: int
    total_epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    @property
    def epoch(self) -> int:
        """Epoch of the step just taken (0 before training)."""
        return max(self.step, 0) // self.steps_per_epoch

    @property
    def next_epoch(self) -> int:
        """Epoch of the next step: the first epoch that trains with a mask changed now."""
        return (self.step + 1) // self.steps_per_epoch

    @property
    def starts_epoch(self) -> bool:
        """True when the next step is the first of an epoch: "start of epoch" and "end of epoch"."""
        return (self.step + 1) % self.steps_per_epoch == 0

    @property
    def progress(self) -> float:
        """Fraction of training steps done."""
        return (self.step + 1) / self.total_steps

    def epoch_start(self, every: int, *, include_first: bool) -> bool:
        """True at the start of epochs ``e`` with ``e % every == 0`` and ``e < total_epochs``."""
        e = self.next_epoch
        return self.starts_epoch and e % every == 0 and e < self.total_epochs and (include_first or e > 0)


@dataclass
class MaskedLayer:
    """One prunable weight and its mask, as the engine manages them."""

    name: str
    module: nn.Module
    target: LayerTarget

    @property
    def weight(self) -> torch.Tensor:
        weight = self.module.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    def mask(self) -> torch.Tensor:
        """The persistent boolean buffer ``weight_mask`` of the module."""
        mask = self.module.weight_mask
        assert isinstance(mask, torch.Tensor)
        return mask

    @property
    def k(self) -> int:
        """Target number of active weights."""
        return self.target.active

    @property
    def numel(self) -> int:
        return self.target.numel

    @property
    def sparsified(self) -> bool:
        return self.target.sparsified


@dataclass
class UpdateContext:
    """What a method may read when it decides: layers, gradients, optimizer state, randomness, LR."""

    info: StepInfo
    layers: list[MaskedLayer]
    rng: torch.Generator
    lr: float
    optimizer: torch.optim.Optimizer | None
    dense_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    model: nn.Module | None = None

    @property
    def sparse_layers(self) -> list[MaskedLayer]:
        """The layers the method decides for; dense-profile layers are never handed to it."""
        return [layer for layer in self.layers if layer.sparsified]

    def grad(self, layer: MaskedLayer) -> torch.Tensor:
        """Gradient of the loss w.r.t. the effective weight, dense where the method declared it."""
        stashed = self.dense_grads.get(layer.name)
        if stashed is not None:
            return stashed
        grad = layer.weight.grad
        return torch.zeros_like(layer.weight) if grad is None else grad

    def optimizer_state(self, layer: MaskedLayer) -> dict[str, Any]:
        """The optimizer's state for this weight (e.g. ``momentum_buffer`` for SGD)."""
        if self.optimizer is None:
            return {}
        return dict(self.optimizer.state.get(layer.weight, {}))

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """U[0, 1) noise shaped like ``like``, from this step's seeded generator, on its device."""
        return torch.rand(like.shape, generator=self.rng).to(like.device)


def random_mask(numel_shape: torch.Size | tuple[int, ...], k: int, rng: torch.Generator) -> torch.Tensor:
    """A uniformly random boolean mask with exactly ``k`` set entries."""
    n = 1
    for d in numel_shape:
        n *= d
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=rng)[:k]] = True
    return mask.view(numel_shape)


@dataclass
class MaskUpdater:
    """Base class of every method. Subclasses are dataclasses; their fields are hyper-parameters.

    Persistent state (anything that must survive ``--resume``) lives in public attributes that are
    not dataclass fields; :meth:`state_dict` collects them. Attributes starting with ``_`` are
    transient.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    @property
    def needs(self) -> Needs:
        return Needs()

    # -- decisions ---------------------------------------------------------------------------------
    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Initial masks of the sparsified layers: uniformly random with exact counts by default."""
        return {layer.name: random_mask(layer.weight.shape, layer.k, ctx.rng) for layer in ctx.sparse_layers}

    def is_update_step(self, info: StepInfo) -> bool:
        """Whether to change the topology after the step ``info.step`` (``-1``: before training)."""
        return False

    def on_step(self, ctx: UpdateContext) -> None:
        """Per-step hook, after backward and before the engine masks gradients (``per_step_hook``)."""

    def after_step(self, ctx: UpdateContext) -> None:
        """Per-step hook after the optimizer step and re-masking, before any topology update
        (``per_step_hook``). ``ctx.batch`` is the step's batch."""

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """New masks for (some of) the sparsified layers; layers left out keep their mask."""
        return {}

    def skips_optimizer_step(self, info: StepInfo) -> bool:
        """Whether the weight update is skipped on a mask-update step (RigL's TF implementation)."""
        return False

    def gradient_densities(self, layers: list[MaskedLayer]) -> dict[str, float] | None:
        """Per-layer density of the weight-gradient the method needs (default: fully dense).

        Only consulted for FLOP accounting when ``needs.dense_grad != "never"``. BiDST overrides it:
        it needs G only on the active set plus its search space.
        """
        return None

    def report(self) -> dict[str, Any]:
        """Method-specific numbers for ``summary.json`` (e.g. a time-averaged density)."""
        return {}

    # -- persistence -------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _state_names(self) -> Iterator[str]:
        fields = {f.name for f in dataclasses.fields(self)}
        return (k for k in vars(self) if k not in fields and not k.startswith("_"))

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._state_names()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def bind(self, engine: SparseEngine) -> None:
        """Called once before initialisation; methods with per-layer state allocate it here."""
