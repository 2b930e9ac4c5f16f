"""The ``MaskUpdater`` contract: a method owns its decisions, the engine owns every invariant.

A method is a dataclass whose fields are its hyper-parameters (with the paper's defaults), so configs
and ``--hp name=value`` set them by name. It answers four questions and nothing else:

* what it *needs* (:class:`Needs`): a dense gradient and when, a batch at initialisation, a per-step
  hook, whether layer counts may drift. That one declaration drives both the engine (what to compute and
  keep) and the FLOP accountant (what to charge), so behaviour and cost cannot disagree;
* the initial masks (:meth:`MaskUpdater.init_masks`, random with exact counts by default);
* *when* to change the topology (a :class:`~dstbench.core.schedules.Periodic` from :meth:`MaskUpdater.schedule`,
  or a hand-written :meth:`MaskUpdater.is_update_step`);
* *what* the new masks are (:meth:`MaskUpdater.update`), usually by scoring and calling the shared
  :func:`dstbench.core.selection.topk_mask` kernel.

The engine (``dstbench.engine.sparse_engine``) then zeroes pruned weights and their optimizer state, zero-initialises
grown weights, checks the counts, and records the topology change.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from dstbench.core.distributions import LayerTarget
from dstbench.core.schedules import Periodic
from dstbench.core.steps import StepInfo

if TYPE_CHECKING:
    from dstbench.engine.sparse_engine import SparseEngine

__all__ = [
    "Needs",
    "StepInfo",
    "MaskedLayer",
    "UpdateContext",
    "MaskUpdater",
    "random_mask",
]

DenseGradWhen = Literal["never", "update_steps", "every_step"]
DensityPolicy = Literal["exact", "at_least", "at_most", "global", "scheduled", "scheduled_global"]
CadenceUnit = Literal["steps", "epochs"]


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
            more (MEST+EM&S grows above the bound between prune and grow); ``at_most`` never more
            (SRigL: a constant fan-in ``floor(k / active neurons)`` per neuron); ``global`` only fixes the
            total (SNFS, DSR move weights across layers); ``scheduled`` follows the per-layer counts of
            :meth:`MaskUpdater.layer_targets` (gradual pruning: GraNet, GMP); ``scheduled_global`` the
            total of :meth:`MaskUpdater.total_target` with free per-layer counts. Both scheduled
            policies must end at the plan's counts (total), which the engine checks.
        sparse: ``False`` for dense training: every layer keeps all its weights.
        backward_set: the method keeps a backward set ``B`` containing the forward mask ``M``
            (:meth:`MaskUpdater.backward_masks`, Top-KAST): the forward pass uses ``M * theta`` only,
            while gradients, weights and optimizer state live on ``B``. The FLOP accountant charges
            the weight-gradient on ``B``.
    """

    dense_grad: DenseGradWhen = "never"
    masked_optimizer: bool = True
    init_batch: bool = False
    per_step_hook: bool = False
    density_policy: DensityPolicy = "exact"
    sparse: bool = True
    backward_set: bool = False


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
    grown_values: dict[str, torch.Tensor] = field(default_factory=dict)
    """Filled by :meth:`MaskUpdater.update`: initial values of grown entries per layer (a tensor shaped
    like the weight; only its entries that are newly active, or newly in the backward set for a method
    with one, are used). Layers not listed grow at 0."""
    backward_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    """The engine's current backward sets ``B`` (empty unless ``needs.backward_set``)."""

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

    def backward_mask(self, layer: MaskedLayer) -> torch.Tensor:
        """The backward set ``B`` of ``layer`` (its forward mask when the method keeps none)."""
        return self.backward_masks.get(layer.name, layer.mask)

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

    Hyper-parameters are checked when the method is built: every float must be finite, and a field
    annotated ``Annotated[float, Range(...)]`` (or the aliases in :mod:`dstbench.core.hparams`) must lie in
    its range; :meth:`validate` adds the rules that tie fields together.

    Persistent state (anything that must survive ``--resume``) is returned by :meth:`state_dict` and
    restored by :meth:`load_state_dict`; override both. (Older plugins that keep state in public
    non-field attributes still work: the default collects those, with a deprecation warning.)
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    """Fields naming an input the method cannot run without (LT's ``ticket_from``: a finished run)."""
    cadence_fields: ClassVar[Mapping[str, CadenceUnit]] = {}
    """Fields that set how often the topology changes, by unit; presets for short runs (``quick``)
    set them for every method, plugins included, so a short comparison stays like-for-like."""

    def __post_init__(self) -> None:
        from dstbench.core.hparams import check_hyperparameters

        check_hyperparameters(self)

    def validate(self) -> None:
        """Rules between fields (e.g. ``min <= max``); raise :class:`dstbench.core.errors.ConfigError`."""

    @property
    def needs(self) -> Needs:
        return Needs()

    # -- decisions ---------------------------------------------------------------------------------
    def init_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Initial masks of the sparsified layers: uniformly random with exact counts by default
        (the scheduled counts at step ``-1`` for ``density_policy="scheduled"``)."""
        counts = self.layer_targets(ctx.info, ctx.sparse_layers) or {}
        return {
            layer.name: random_mask(layer.weight.shape, counts.get(layer.name, layer.k), ctx.rng)
            for layer in ctx.sparse_layers
        }

    def initial_weights(self, ctx: UpdateContext) -> Mapping[str, torch.Tensor] | None:
        """Weights to start training from instead of the model's initialisation, by ``state_dict`` key
        (LT's rewinding to a ticket's theta_k). The engine loads them, then applies the masks; a
        method never writes weights itself."""
        return None

    def schedule(self) -> Periodic | None:
        """When the topology changes, as a schedule object (None: never, or see ``is_update_step``)."""
        return None

    def is_update_step(self, info: StepInfo) -> bool:
        """Whether to change the topology after the step ``info.step`` (``-1``: before training).

        Defaults to :meth:`schedule`; override only for a rule no :class:`Periodic` expresses.
        """
        when = self.schedule()
        return when is not None and when.fires(info)

    def update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int] | None:
        """The steps after which the topology changes, in closed form (None: only a simulation of
        ``is_update_step`` can tell, for methods that override it)."""
        if type(self).is_update_step is not MaskUpdater.is_update_step:
            return None
        when = self.schedule()
        return [] if when is None else when.update_steps(total_steps, steps_per_epoch)

    def layer_targets(self, info: StepInfo, layers: list[MaskedLayer]) -> dict[str, int] | None:
        """``density_policy="scheduled"``: each layer's exact active count after an update decided at
        ``info.step`` (``-1``: the initial masks). Must equal ``layer.k`` at the end of training."""
        return None

    def total_target(self, info: StepInfo, layers: list[MaskedLayer]) -> int | None:
        """``density_policy="scheduled_global"``: the exact total active count after an update decided
        at ``info.step``. Must equal the plan's total at the end of training."""
        return None

    def backward_masks(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """``needs.backward_set``: the backward set ``B`` of every sparsified layer, a superset of the
        forward mask just installed (called after :meth:`init_masks` and after every :meth:`update`)."""
        return {}

    def on_step(self, ctx: UpdateContext) -> None:
        """Per-step hook, after backward and before the engine masks gradients (``per_step_hook``)."""

    def after_step(self, ctx: UpdateContext) -> None:
        """Per-step hook after the optimizer step and re-masking, before any topology update
        (``per_step_hook``). ``ctx.batch`` is the step's batch."""

    def update(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """New masks for (some of) the sparsified layers; layers left out keep their mask. Grown
        entries start at 0 unless ``ctx.grown_values`` gives their values."""
        return {}

    def skips_optimizer_step(self, info: StepInfo) -> bool:
        """Whether the weight update is skipped on a mask-update step (RigL's TF implementation)."""
        return False

    def gradient_densities(self, layers: list[MaskedLayer]) -> dict[str, float] | None:
        """Per-layer density of the weight-gradient the method needs (default: fully dense).

        Only consulted for FLOP accounting when ``needs.dense_grad != "never"``. BiDST overrides it:
        it needs G only on the active set plus its search space. Backward-set methods are charged
        their backward sets by the accountant without overriding this.
        """
        return None

    def report(self) -> dict[str, Any]:
        """Method-specific numbers for ``summary.json`` (e.g. a time-averaged density)."""
        return {}

    # -- persistence -------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _implicit_state_names(self) -> Iterator[str]:
        fields = {f.name for f in dataclasses.fields(self)}
        return (k for k in vars(self) if k not in fields and not k.startswith("_"))

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` needs. Override it (with :meth:`load_state_dict`) in methods with state."""
        state = {key: getattr(self, key) for key in self._implicit_state_names()}
        if state:
            _warn_implicit_state(type(self))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def bind(self, engine: SparseEngine) -> None:
        """Called once before initialisation; methods with per-layer state allocate it here."""


_WARNED: set[type] = set()


def _warn_implicit_state(cls: type) -> None:
    """Once per class: public non-field attributes as state is the pre-v2 contract."""
    if cls in _WARNED:
        return
    _WARNED.add(cls)
    warnings.warn(
        f"{cls.__name__} keeps state in public attributes; define state_dict()/load_state_dict() "
        "(docs/plugins.md, 'State'). The implicit form will be removed in a future version.",
        DeprecationWarning,
        stacklevel=3,
    )
