"""Do two devices make the same mask update from the same inputs? A check that fails only for a bug.

Comparing the masks of two *training* runs cannot separate a device bug from noise: every step before
the update rounds differently (another device, another thread count), and the drift moves entries
across the selection boundary (the CPU alone, 1 against 2 threads, differs by ~1 % of a ResNet-32's
entries at SET's first update). So this check skips training: it builds one state on the CPU (weights,
masks, the method's own state such as BiDST's scores, optimizer state) and one set of gradients, all
float32-representable, loads that *same* state on each side (:class:`Side`: device, dtype, threads), and
runs the one mask update on both.

What may still differ is the update's own arithmetic, and only at **exact ties**: where a selection's
boundary is shared by equal scores (the lowest chosen score equals the highest passed-over one), the
deterministic tie-break decides, and a score rounded differently on the other side can land in or out
of the tie. Every selection goes through the shared kernel (:func:`~dstbench.core.selection.
recording_selections`), so each differing entry is classified against its own selection:

* **at a tie**: its score equals a tied boundary on either side: counted, not a failure;
* **after a tie**: a later selection whose inputs (eligible set, counts) differ because an earlier one
  broke a tie differently (RigL grows among what it did not keep): counted, not a failure;
* anything else is a **failure**, as are masks that differ with no selection differing, or a different
  sequence of selections.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dstbench.core.distributions import plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.core.selection import Selection, recording_selections
from dstbench.engine.sparse_engine import SparseEngine

__all__ = ["Side", "UpdateInputs", "Outcome", "Agreement", "prepare_inputs", "run_update", "compare", "check_agreement"]


@dataclass(frozen=True)
class Side:
    """Where one copy of the update runs."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    threads: int = 1

    def label(self) -> str:
        kind = "" if self.dtype == torch.float32 else f" {str(self.dtype).removeprefix('torch.')}"
        threads = f" ({self.threads} thread{'s' if self.threads != 1 else ''})" if self.device == "cpu" else ""
        return f"{self.device}{kind}{threads}"


@dataclass
class UpdateInputs:
    """One state to feed both sides: built once on the CPU, float32-representable, kept in float64."""

    method: str
    hp: dict[str, Any]
    model: str
    num_classes: int
    sparsity: float
    distribution: str
    seed: int
    steps_per_epoch: int
    total_epochs: int
    step: int
    """The update fires after this step (the method's first scheduled update)."""
    model_state: dict[str, torch.Tensor]
    engine_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    grads: dict[str, torch.Tensor]


@dataclass
class Outcome:
    """One side's update: its new masks (and backward sets) and the selections that made them."""

    masks: dict[str, torch.Tensor]
    selections: list[Selection]


@dataclass
class Agreement:
    """The verdict of :func:`compare` (:attr:`ok` is False only for a disagreement the inputs cannot explain)."""

    entries: int = 0
    mask_differences: int = 0
    at_ties: int = 0
    after_ties: int = 0
    failing: int = 0
    selections: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED: " + "; ".join(self.problems)
        return (
            f"{self.mask_differences} of {self.entries} mask entries differ ({self.at_ties} selection entries at exact "
            f"ties, {self.after_ties} after a tie, {self.failing} elsewhere; {self.selections} selections): {verdict}"
        )


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def _build(inputs: UpdateInputs, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, SparseEngine]:
    """Model, optimizer and engine of the method, as the trainer builds them (a fixed SGD recipe)."""
    import timm

    import dstbench.models  # noqa: F401  (registers the CIFAR backbones with timm)

    torch.manual_seed(inputs.seed)
    model = timm.create_model(inputs.model, num_classes=inputs.num_classes).to(device=device, dtype=dtype)
    updater = create_updater(inputs.method, inputs.hp)
    if updater.inputs:
        raise ConfigError(f"{inputs.method} needs inputs ({', '.join(updater.inputs)}); the agreement check has none")
    sparsity = inputs.sparsity if updater.needs.sparse else 0.0
    plan = plan_sparsity(describe_layers(model), sparsity, inputs.distribution)
    engine = SparseEngine(
        model, plan, updater, _optimizer(model), seed=inputs.seed, steps_per_epoch=inputs.steps_per_epoch,
        total_epochs=inputs.total_epochs,
    )  # fmt: skip
    engine.loss_fn = nn.functional.cross_entropy
    return model, engine


def _draw(like: torch.Tensor, generator: torch.Generator, scale: float) -> torch.Tensor:
    """float32 normal noise (so every side's dtype holds it exactly), shaped like ``like``, on the CPU."""
    return (torch.randn(like.shape, generator=generator) * scale).to(like.dtype)


def _to(value: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A nested state with its floating tensors moved to ``device`` in ``dtype`` (others: device only)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, Mapping):
        return {key: _to(item, device, dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(item, device, dtype) for item in value)
    return value


def _first_update(engine: SparseEngine, total_steps: int) -> int | None:
    return next((step for step in range(total_steps) if engine.update_due(step)), None)


def prepare_inputs(
    method: str,
    hp: Mapping[str, Any] | None = None,
    *,
    model: str = "tiny_cnn",
    num_classes: int = 10,
    input_size: int = 32,
    sparsity: float = 0.9,
    distribution: str = "erk",
    seed: int = 0,
    steps_per_epoch: int = 50,
    total_epochs: int = 160,
) -> UpdateInputs | None:
    """The state both sides start from (None: the method never updates its masks after initialisation).

    The method chooses its initial masks (a random batch where it scores one), then every parameter
    gets random weights and one optimizer step gives it momentum, so the method's state, optimizer
    state and weights are all in play; the update's gradients are a fresh draw.
    """
    inputs = UpdateInputs(method, dict(hp or {}), model, num_classes, sparsity, distribution, seed, steps_per_epoch,
                          total_epochs, step=0, model_state={}, engine_state={}, optimizer_state={}, grads={})  # fmt: skip
    _, engine = _build(inputs, torch.device("cpu"), torch.float32)
    step = _first_update(engine, steps_per_epoch * total_epochs)
    if step is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    batch = (_draw(torch.empty(4, 3, input_size, input_size), generator, 1.0), torch.arange(4) % num_classes)
    engine.initialize(batch if engine.updater.needs.init_batch else None)
    parameters = dict(engine.model.named_parameters())
    with torch.no_grad():
        for parameter in parameters.values():
            parameter.copy_(_draw(parameter, generator, 0.1))
            parameter.grad = _draw(parameter, generator, 0.01)
        engine.apply_masks()
        engine.masked_step()  # momentum for the methods that read optimizer state
    if engine.updater.needs.per_step_hook:  # the method's own state (BiDST's scores) off its initial value
        engine.updater.on_step(engine.context(0, "step", batch=batch))
        engine.apply_masks()
    grads = {name: _draw(p, generator, 0.01).double() for name, p in parameters.items()}
    assert engine.optimizer is not None
    inputs.step = step
    inputs.model_state = {k: v.double() if v.is_floating_point() else v.clone() for k, v in engine.model.state_dict().items()}
    inputs.engine_state = _to(copy.deepcopy(engine.state_dict()), "cpu", torch.float64)
    inputs.optimizer_state = _to(copy.deepcopy(engine.optimizer.state_dict()), "cpu", torch.float64)
    inputs.grads = grads
    return inputs


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_update(inputs: UpdateInputs, side: Side) -> Outcome:
    """Load ``inputs`` on ``side`` and run the method's update after ``inputs.step`` there."""
    device = torch.device(side.device)
    with _threads(side.threads):
        model, engine = _build(inputs, device, side.dtype)
        model.load_state_dict(_to(inputs.model_state, device, side.dtype))
        engine.load_state_dict(_to(inputs.engine_state, device, side.dtype))
        assert engine.optimizer is not None
        engine.optimizer.load_state_dict(_to(inputs.optimizer_state, device, side.dtype))
        for name, parameter in model.named_parameters():
            parameter.grad = inputs.grads[name].to(device=device, dtype=side.dtype)
        with recording_selections() as selections:
            engine.backward.restore()  # as the trainer does around an update
            engine._update(inputs.step)
            engine.backward.set_aside()
        masks = {f"{layer.name}.mask": layer.mask.to("cpu").clone() for layer in engine.sparse_layers}
        masks.update({f"{name}.backward": mask.to("cpu").clone() for name, mask in engine.backward_masks().items()})
    return Outcome(masks, selections)


def _at_tie(selection: Selection) -> torch.Tensor:
    """Entries whose score equals their row's boundary where the boundary is tied: the lowest chosen
    score equals the highest eligible score passed over."""
    scores, chosen, eligible = selection.scores, selection.chosen, selection.eligible
    low = torch.where(chosen, scores, float("inf")).min(dim=1).values
    high = torch.where(eligible & ~chosen, scores, float("-inf")).max(dim=1).values
    return eligible & (low == high).unsqueeze(1) & (scores == low.unsqueeze(1))


def compare(a: Outcome, b: Outcome) -> Agreement:
    """Classify every difference between two sides' updates (module docstring)."""
    result = Agreement(selections=len(a.selections))
    for name, mask in a.masks.items():
        result.entries += mask.numel()
        result.mask_differences += int((mask != b.masks[name]).sum())
    if len(a.selections) != len(b.selections) or any(x.scores.shape != y.scores.shape for x, y in zip(a.selections, b.selections)):
        result.problems.append(f"the sides made different selections ({len(a.selections)} against {len(b.selections)})")
        return result
    tie_seen = False
    for x, y in zip(a.selections, b.selections):
        differ = x.chosen != y.chosen
        same_inputs = torch.equal(x.eligible, y.eligible) and torch.equal(x.chosen.sum(1), y.chosen.sum(1))
        if not same_inputs and tie_seen:
            result.after_ties += int(differ.sum())
            continue
        tied = _at_tie(x) | _at_tie(y)
        result.at_ties += int((differ & tied).sum())
        result.failing += int((differ & ~tied).sum())
        tie_seen |= bool((differ & tied).any())
    if result.failing:
        result.problems.append(f"{result.failing} selected entries differ away from any tie")
    if result.mask_differences and not (result.at_ties or result.after_ties or result.failing):
        result.problems.append("masks differ while every selection agreed")
    return result


def check_agreement(method: str, a: Side, b: Side, hp: Mapping[str, Any] | None = None, **options: Any) -> Agreement | None:
    """:func:`prepare_inputs` once, the update on both sides, :func:`compare` (None: no update to check)."""
    inputs = prepare_inputs(method, hp, **options)
    if inputs is None:
        return None
    return compare(run_update(inputs, a), run_update(inputs, b))
