"""The ``MaskUpdater`` contract: a method owns its decisions, the engine owns every invariant.

A method is a dataclass whose fields are its hyper-parameters (with the paper's defaults), so configs
and ``--hp name=value`` set them by name. It answers, in its paper's words:

* what it *needs* (:class:`Needs`): a dense gradient and when, a batch at initialisation, a per-step
  hook and when, whether layer counts may drift. That one declaration drives both the engine (what to
  compute and keep) and the FLOP accountant (what to charge);
* the initial masks (:meth:`MaskUpdater.init_masks`, random with exact counts by default);
* *when* the topology changes (:attr:`MaskUpdater.schedule`, a schedule object such as
  :class:`~dstbench.core.schedules.Periodic`, built once from the hyper-parameters);
* *what* the new masks are (:meth:`MaskUpdater.update`), usually by scoring and calling the shared
  :func:`dstbench.core.selection.topk_mask` kernel.

The engine (``dstbench.engine``) then zeroes pruned weights and their optimizer state, zero-initialises
grown weights, checks the counts, and records the topology change. A method never holds the engine:
it sees a read-only :class:`RunView` (``setup``) and an :class:`UpdateContext` per decision.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

import torch

from dstbench.core.context import MaskedLayer, MaskUpdate, Masks, RunView, Targets, UpdateContext, descend_
from dstbench.core.legacy import contract_default, legacy_hook, overrides, warn_once
from dstbench.core.needs import Needs
from dstbench.core.schedules import Schedule
from dstbench.core.steps import StepInfo

__all__ = [
    "Needs",
    "StepInfo",
    "MaskedLayer",
    "UpdateContext",
    "RunView",
    "MaskUpdate",
    "Targets",
    "MaskUpdater",
    "descend_",
    "random_mask",
    "schedule_of",
    "update_fires",
    "update_steps_of",
    "skips_optimizer",
    "gradient_density_of",
    "hook_capture_problem",
]

CadenceUnit = Literal["steps", "epochs"]


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
    """Fields naming a finished run the method cannot start without (LT's ``ticket_from``). The
    training side loads each and hands it over in ``RunView.inputs`` / ``UpdateContext.inputs``."""
    default_structure: ClassVar[str] = "unstructured"
    """The mask structure a run of this method gets when ``--structure`` is not given (SR-STE: nm:2:4)."""
    cadence_fields: ClassVar[Mapping[str, CadenceUnit]] = {}
    """Fields that set how often the topology changes, by unit; presets for short runs (``quick``)
    set them for every method, plugins included, so a short comparison stays like-for-like."""

    narrows_model: ClassVar[bool] = False
    """True for a method that trains a narrower network than ``--model`` (``small-dense``): the run
    builds the model at the width :func:`dstbench.train.narrow.narrow_for` picks and tells the method
    through :meth:`narrowed`."""

    def __post_init__(self) -> None:
        from dstbench.core.hparams import check_hyperparameters

        check_hyperparameters(self)

    def validate(self) -> None:
        """Rules between fields (e.g. ``min <= max``); raise :class:`dstbench.core.errors.ConfigError`."""

    @property
    def needs(self) -> Needs:
        return Needs()

    def setup(self, run: RunView) -> None:
        """Called once before the initial masks; methods with per-layer state size it here."""

    @cached_property
    def schedule(self) -> Schedule | None:
        """When the topology changes (None: never). Subclasses build theirs once, from their fields."""
        return None

    # -- decisions ---------------------------------------------------------------------------------
    def init_masks(self, ctx: UpdateContext) -> Masks | MaskUpdate:
        """Initial masks of the sparsified layers: uniformly random with exact counts by default
        (the scheduled counts at step ``-1`` for ``density_policy="scheduled"``)."""
        targets = self.targets(ctx.info, ctx.sparse_layers)
        counts = (targets.layers if targets is not None else None) or {}
        return {
            layer.name: random_mask(layer.weight.shape, counts.get(layer.name, layer.k), ctx.rng)
            for layer in ctx.sparse_layers
        }

    def targets(self, info: StepInfo, layers: list[MaskedLayer]) -> Targets | None:
        """Scheduled policies: the counts promised after an update decided at ``info.step`` (``-1``:
        the initial masks); they must reach the plan at the end of training."""
        layer_targets = legacy_hook(self, "layer_targets")
        total_target = legacy_hook(self, "total_target")
        if layer_targets is None and total_target is None:
            return None
        return Targets(
            layers=None if layer_targets is None else layer_targets(info, layers),
            total=None if total_target is None else total_target(info, layers),
        )

    def update(self, ctx: UpdateContext) -> Masks | MaskUpdate:
        """New masks for (some of) the sparsified layers; layers left out keep their mask. Grown
        entries start at 0 unless the returned :class:`MaskUpdate` gives their values."""
        return {}

    def on_step(self, ctx: UpdateContext) -> None:
        """Per-step hook (``needs.per_step_hook``), at ``needs.step_hook_at``; ``ctx.batch`` is the
        step's batch. With ``needs.capturable_hook`` it may run inside the compiled step or a CUDA
        graph: fixed-shape tensor work only (docs/plugins.md, "Per-step hooks under --compile")."""

    def step_inputs(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Host-side inputs of this step's ``on_step``, drawn from ``ctx.rng`` before the hook runs and
        handed to it in ``ctx.step_inputs``: same names and shapes every step, so a captured hook
        reads them from fixed buffers (Deep-R's Langevin noise). Default: none."""
        return {}

    def narrowed(self, record: Mapping[str, Any]) -> None:
        """The chosen width and weight counts of a ``narrows_model`` method's network."""

    def report(self) -> dict[str, Any]:
        """Method-specific numbers for ``summary.json`` (e.g. a time-averaged density)."""
        return {}

    @contract_default
    def is_update_step(self, info: StepInfo) -> bool:
        """Whether the topology changes after step ``info.step``: the schedule's answer. Overriding it
        is the 0.1 contract (still honoured, with a deprecation warning)."""
        when = schedule_of(self)
        return when is not None and when.fires(info)

    # -- persistence -------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _implicit_state_names(self) -> Iterator[str]:
        fields = {f.name for f in dataclasses.fields(self)}
        return (
            k for k in vars(self)
            if k not in fields and not k.startswith("_") and not isinstance(getattr(type(self), k, None), cached_property)
        )

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` needs. Override it (with :meth:`load_state_dict`) in methods with state."""
        state = {key: getattr(self, key) for key in self._implicit_state_names()}
        if state:
            _warn_implicit_state(type(self))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# -- how the engine and the FLOP accountant ask a method, old hooks included ---------------------------
def schedule_of(updater: MaskUpdater) -> Schedule | None:
    """The method's schedule object (a 0.2 plugin's ``schedule()`` method is called)."""
    when: Any = updater.schedule
    if callable(when) and not isinstance(when, Schedule):
        warn_once(type(updater), "schedule")
        when = when()
    schedule: Schedule | None = when
    return schedule


def update_fires(updater: MaskUpdater, info: StepInfo) -> bool:
    """Whether the topology changes after ``info.step`` (a 0.1 ``is_update_step`` is honoured)."""
    hand_written = legacy_hook(updater, "is_update_step")
    if hand_written is not None:
        return bool(hand_written(info))
    when = schedule_of(updater)
    return when is not None and when.fires(info)


def update_steps_of(updater: MaskUpdater, total_steps: int, steps_per_epoch: int) -> list[int] | None:
    """The steps after which the topology changes, in closed form (None: only asking
    ``is_update_step`` step by step can tell, for a plugin that hand-writes it)."""
    closed_form = legacy_hook(updater, "update_steps")
    if closed_form is not None:
        steps: list[int] | None = closed_form(total_steps, steps_per_epoch)
        return steps
    if overrides(updater, "is_update_step"):
        return None
    when = schedule_of(updater)
    return [] if when is None else when.update_steps(total_steps, steps_per_epoch)


def skips_optimizer(updater: MaskUpdater, info: StepInfo) -> bool:
    """Whether the optimizer step is skipped on this update step."""
    old = legacy_hook(updater, "skips_optimizer_step")
    return bool(old(info)) if old is not None else updater.needs.skip_optimizer_on_update


UNDECLARED = "it does not declare Needs(capturable_hook=True) (docs/plugins.md, 'Per-step hooks under --compile')"


def hook_capture_problem(updater: MaskUpdater) -> str | None:
    """Why the method's per-step hook cannot run inside the captured step (None: it can, or the
    method has none). Declared by the method (``Needs.capturable_hook``) or detected: a 0.2
    ``after_step`` hook predates the rules."""
    needs = updater.needs
    if not needs.per_step_hook:
        return None
    if overrides(updater, "after_step"):
        return "it defines the 0.2 hook after_step, which predates the captured-step rules"
    if isinstance(needs.capturable_hook, str):
        return needs.capturable_hook
    return None if needs.capturable_hook else UNDECLARED


def gradient_density_of(updater: MaskUpdater, layers: list[MaskedLayer]) -> Mapping[str, float] | None:
    """Where the method needs the weight-gradient (None: dense, or its backward set)."""
    old = legacy_hook(updater, "gradient_densities")
    if old is not None:
        declared: Mapping[str, float] | None = old(layers)
        return declared
    return updater.needs.gradient_density


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
