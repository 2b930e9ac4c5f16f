"""The sparse-training engine: every invariant of DST lives here, so no method can break one.

One training step, in one call::

    loss.backward()
    engine.step(step, batch)  # dense-gradient stash, on_step, masked gradients, optimizer.step()
                              # (unless skipped on mask steps), re-masking, then the scheduled update
    optimizer.zero_grad()

Guarantees:

* every prunable weight has a persistent boolean buffer ``weight_mask``, holding the plan's structure;
* each sparsified layer holds exactly its target count (or what the method's declared density policy
  allows: at least it, the same total, or the method's scheduled counts), checked at every change, and
  a scheduled method must end at the plan;
* weights, and every optimizer-state tensor shaped like the weight (SGD momentum, Adam moments), are
  zero off the mask after every step; grown weights and their state start at 0 (unless the method
  declares ``masked_optimizer=False``, SNFS, and keeps its dense state);
* all randomness a method sees comes from a generator seeded by (run seed, step, purpose), so reruns
  and distributed ranks produce the same masks;
* a method with a backward set ``B`` (``needs.backward_set``, Top-KAST) trains on ``B`` while the
  forward pass sees only ``M`` (:mod:`dstbench.engine.backward_set`, called at fixed points of the step).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dstbench.core.context import MaskedLayer, Masks, MaskUpdate, RunView, UpdateContext, weight_decay_of
from dstbench.core.distributions import SparsityPlan, check_distribution_policy, realised_sparsity
from dstbench.core.errors import MaskInvariantError
from dstbench.core.layers import find_prunable_layers, output_layer_name
from dstbench.core.legacy import legacy_hook
from dstbench.core.steps import StepInfo
from dstbench.core.structures import parse_structure
from dstbench.core.updater import MaskUpdater, hook_capture_problem, skips_optimizer, update_fires
from dstbench.engine.backward_set import backward_set_for
from dstbench.engine.counts import count_problems, count_targets, zero_problems
from dstbench.engine.decisions import apply_grown_values, as_update, check_masks
from dstbench.engine.initial_weights import load_initial_weights
from dstbench.engine.structure import cover_masks, project_masks, structure_problems
from dstbench.engine.topology import TopologyRecord, layer_change
from dstbench.engine.zeroing import mask_gradients, zero_off

__all__ = ["SparseEngine", "derive_seed", "MaskInvariantError"]

MaskCallback = Callable[[int, int, dict[str, torch.Tensor], "TopologyRecord | None"], None]


def derive_seed(seed: int, step: int, stream: str) -> int:
    """A 63-bit seed from (run seed, step, purpose); independent of global RNG state."""
    digest = hashlib.sha256(f"{seed}:{step}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SparseEngine:
    """Owns the masks of one model and keeps them consistent with weights and optimizer state."""

    def __init__(
        self,
        model: nn.Module,
        plan: SparsityPlan,
        updater: MaskUpdater,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        seed: int = 0,
        steps_per_epoch: int = 1,
        total_epochs: int = 1,
        on_masks: MaskCallback | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        """``inputs``: what the method declared in ``MaskUpdater.inputs`` (LT's ticket), loaded by training."""
        if plan.sparsified:
            check_distribution_policy(plan.distribution, updater.needs.density_policy, updater.name)
        self.model = model
        self.plan = plan
        self.structure, self.updater = parse_structure(plan.structure), updater  # structure: engine/structure.py
        self.optimizer = optimizer
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.total_epochs = total_epochs
        self.on_masks = on_masks
        self.inputs: Mapping[str, Any] = dict(inputs or {})
        self.records: list[TopologyRecord] = []
        self.update_seconds = 0.0
        self.step_hook_seconds = 0.0  # time in the method's per-step hooks (BiDST's score learning)
        self.layers: list[MaskedLayer] = []
        for name, module in find_prunable_layers(model):
            if "weight_mask" not in dict(module.named_buffers(recurse=False)):
                weight = module.weight
                assert isinstance(weight, torch.Tensor)
                module.register_buffer("weight_mask", torch.ones_like(weight, dtype=torch.bool))
            self.layers.append(MaskedLayer(name, module, plan.target(name)))
        self.sparse_layers = [layer for layer in self.layers if layer.sparsified]
        self.fired: dict[str, torch.Tensor] = {}
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._stash: dict[str, torch.Tensor] = {}
        self._pending_update = False
        self._pending_info: StepInfo | None = None  # the clock the pending update's schedule fired on
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skipped_steps = 0
        self.previous_step_skipped = False
        self._last_info: StepInfo | None = None  # the step of the last installed masks (scheduled counts)
        self.backward = backward_set_for(updater.needs.backward_set, self.sparse_layers)
        updater.setup(self.run_view())
        bind = legacy_hook(updater, "bind")
        if bind is not None:
            bind(self)

    # -- what a method sees ------------------------------------------------------------------------
    def run_view(self) -> RunView:
        """The read-only view of this run a method is set up with."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        return RunView(
            layers=tuple(self.layers),
            plan=self.plan,
            steps_per_epoch=self.steps_per_epoch,
            total_epochs=self.total_epochs,
            optimizer_groups=tuple({k: v for k, v in group.items() if k != "params"} for group in groups),
            weight_decays={layer.name: weight_decay_of(self.optimizer, layer.weight) for layer in self.layers},
            inputs=self.inputs,
            output_layer=output_layer_name(self.model),
        )

    def info(self, step: int) -> StepInfo:
        return StepInfo(step, self.steps_per_epoch, self.total_epochs, self.skipped_steps, self.previous_step_skipped)

    def generator(self, step: int, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, step, stream))

    def context(
        self, step: int, stream: str, info: StepInfo | None = None, lr: float | torch.Tensor | None = None, **extra: Any
    ) -> UpdateContext:
        """What a method sees at ``step``, on ``info``'s clock if given (the one an update fired on);
        ``lr``: the captured step's tensor LR instead of the optimizer's, read as a float."""
        if lr is None:
            lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0
        return UpdateContext(
            info=self.info(step) if info is None else info,
            layers=self.layers,
            rng=self.generator(step, stream),
            lr=lr,
            optimizer=self.optimizer,
            dense_grads=self._stash,
            loss_fn=self.loss_fn,
            model=self.model,
            backward_masks=self.backward.masks(),
            inputs=self.inputs,
            **extra,
        )

    def masks(self) -> dict[str, torch.Tensor]:
        return {layer.name: layer.mask for layer in self.layers}

    def backward_masks(self) -> dict[str, torch.Tensor]:
        """The backward sets ``B`` (empty for methods without one: their ``B`` is their mask)."""
        return self.backward.masks()

    def update_due(self, step: int) -> bool:
        """Whether the schedule changes the topology after ``step`` (asked by the fast steppers)."""
        return update_fires(self.updater, self.info(step))

    # -- lifecycle ---------------------------------------------------------------------------------
    def initialize(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Choose the initial masks, zero the pruned weights, and run a "before training" update."""
        if self.updater.needs.init_batch and batch is None:
            raise ValueError(f"method {self.updater.name!r} needs a batch at initialisation")
        ctx = self.context(-1, "init", batch=batch)
        result = as_update(self.updater.init_masks(ctx), ctx)
        self._install(result.masks, require_all=True, info=ctx.info)
        start = result.weights
        if start is None and (initial_weights := legacy_hook(self.updater, "initial_weights")) is not None:
            start = initial_weights(ctx)
        if start is not None:
            load_initial_weights(self.model, start, self.updater.name)
        self._install_backward(result, -1, require_all=True)
        self.fired = {layer.name: layer.mask.clone() for layer in self.sparse_layers}
        self.apply_masks()
        if self.on_masks is not None:
            self.on_masks(0, 0, self.masks(), None)
        if update_fires(self.updater, self.info(-1)):
            # As at every step: B - M back in the weights for the update, set aside after it.
            self.backward.restore()
            self._update(-1)
            self.backward.set_aside()

    def step(self, step: int, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Everything sparse training does between ``loss.backward()`` and ``optimizer.zero_grad()``.

        The one call of the step protocol (the trainer, the tests and the benchmarks all use it):
        the method's per-step work, gradient masking, the optimizer's step unless the method skips
        it on a mask step, re-masking, and the scheduled topology update. ``batch`` is the step's
        (inputs, targets), for per-step hooks that evaluate the loss again (BiDST's eq. 11).
        """
        if self.is_plain_step(step):
            self.previous_step_skipped = False
            self.masked_step()
            return
        if self._before_optimizer(step, batch) and self.optimizer is not None:
            self.optimizer.step()
        self._after_optimizer(step)

    def is_plain_step(self, step: int) -> bool:
        """A step on which the method decides nothing: its whole work is :meth:`masked_step`."""
        needs = self.updater.needs
        return not (needs.per_step_hook or needs.backward_set or self.update_due(step))

    def is_capturable_step(self, step: int) -> bool:
        """No update due and no per-step hook, or a capturable one: :class:`~dstbench.engine.captured.CapturedStep`."""
        return hook_capture_problem(self.updater) is None and not self.update_due(step)

    @torch.no_grad()
    def masked_step(self) -> None:
        """A plain step's tensor work: mask the gradients, ``optimizer.step()``, re-mask."""
        self.mask_gradients()
        if self.optimizer is not None:
            self.optimizer.step()
        self.apply_masks()

    def mask_gradients(self) -> None:
        """Gradients to zero off the backward set (unless the method keeps its optimizer dense)."""
        if self.updater.needs.masked_optimizer:
            mask_gradients(self.sparse_layers, self.backward.mask)

    def _before_optimizer(self, step: int, batch: tuple[torch.Tensor, torch.Tensor] | None) -> bool:
        """Between ``backward()`` and ``optimizer.step()``. Returns whether to take the optimizer step."""
        info = self.info(step)
        self._batch = batch
        needs = self.updater.needs
        self._pending_update = update_fires(self.updater, info)
        self._pending_info = info if self._pending_update else None
        self._stash = {}
        self.backward.restore()
        if self._pending_update and needs.dense_grad != "never" and needs.masked_optimizer:
            # The update runs after the optimizer step, when the gradients are already masked.
            grads = [(layer.name, layer.weight.grad) for layer in self.sparse_layers]
            self._stash = {name: grad.detach().clone() for name, grad in grads if grad is not None}
        if needs.hook_runs(after_optimizer=False):
            self._run_hook(self.updater.on_step, self.context(step, "step", batch=batch))
        self.mask_gradients()
        skip = self._pending_update and skips_optimizer(self.updater, info)
        self.skipped_steps += int(skip)
        self.previous_step_skipped = skip
        return not skip

    def _after_optimizer(self, step: int) -> None:
        """After ``optimizer.step()``: restore the zeros, then the scheduled topology update."""
        self.zero_off_backward()
        needs = self.updater.needs
        after_step = legacy_hook(self.updater, "after_step") if needs.per_step_hook else None
        if needs.hook_runs(after_optimizer=True) or after_step is not None:
            self._run_hook(after_step or self.updater.on_step, self.context(step, "after_step", batch=self._batch, after_optimizer=True))
        if self._pending_update:
            self._update(step, self._pending_info)
        self.backward.set_aside()
        self._pending_update = False
        self._pending_info = None
        self._stash = {}
        self._batch = None

    def _run_hook(self, hook: Callable[[UpdateContext], None], ctx: UpdateContext) -> None:
        """The method's per-step hook, eagerly, with its host-drawn ``step_inputs``; timed."""
        start = time.perf_counter()
        ctx.step_inputs = self.updater.step_inputs(ctx)
        hook(ctx)
        if self.sparse_layers and self.sparse_layers[0].mask.is_cuda:
            torch.cuda.synchronize()
        self.step_hook_seconds += time.perf_counter() - start

    def apply_masks(self) -> None:
        """Weights (and, unless the method keeps them dense, optimizer state) to zero off the backward
        set, then the forward view: weights zero off the mask, ``B - M`` set aside."""
        self.zero_off_backward()
        self.backward.set_aside()

    def zero_off_backward(self) -> None:
        zero_off(self.sparse_layers, self.backward.mask, self._masked_state())

    def _masked_state(self) -> torch.optim.Optimizer | None:
        """The optimizer whose state the engine masks (None: none, or the method keeps it dense)."""
        return self.optimizer if self.updater.needs.masked_optimizer else None

    # -- topology updates --------------------------------------------------------------------------
    def _update(self, step: int, clock: StepInfo | None = None) -> None:
        """The update after ``step`` on ``clock``, the one its schedule fired on (TF RigL: one global step)."""
        start = time.perf_counter()
        info = self.info(step) if clock is None else clock
        before = {layer.name: layer.mask.clone() for layer in self.sparse_layers}
        before_backward = {layer.name: self.backward.mask(layer).clone() for layer in self.sparse_layers}
        ctx = self.context(step, "update", info)
        result = as_update(self.updater.update(ctx), ctx)
        self._install(result.masks, require_all=False, info=info)
        self._install_backward(result, step, require_all=False)
        with torch.no_grad():
            # Survivors (in B before and after) keep their weight and optimizer state; everything
            # else starts from zero, or from the values the method supplied for grown entries. A
            # method with dense optimizer state (SNFS) keeps the momentum that made a weight grow.
            kept = {layer.name: self.backward.mask(layer) & before_backward[layer.name] for layer in self.sparse_layers}
            zero_off(self.sparse_layers, lambda layer: kept[layer.name], self._masked_state())
            apply_grown_values(self.updater.name, self.sparse_layers, result.grown, self.backward.mask, before_backward)
            self.zero_off_backward()
        for layer in self.sparse_layers:
            self.fired[layer.name] |= layer.mask
        if self.sparse_layers and self.sparse_layers[0].mask.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.update_seconds += seconds
        record = TopologyRecord(
            step=step + 1,
            epoch=info.next_epoch,
            seconds=seconds,
            layers={layer.name: layer_change(before[layer.name], layer.mask) for layer in self.sparse_layers},
        )
        self.records.append(record)
        if self.on_masks is not None:
            self.on_masks(record.step, record.epoch, self.masks(), record)

    def _install_backward(self, result: MaskUpdate, step: int, *, require_all: bool) -> None:
        """The method's backward sets, from its answer (or a 0.2 plugin's ``backward_masks`` hook)."""
        if not self.updater.needs.backward_set:
            return
        masks = result.backward
        if masks is None:
            old = legacy_hook(self.updater, "backward_masks")
            masks = old(self.context(step, "backward")) if old is not None else {}
        masks = cover_masks(self.structure, self.masks(), masks)  # B holds the projected mask
        self.backward.install(masks, require_all=require_all, owner=self.updater.name)

    def _install(self, new_masks: Masks, *, require_all: bool, info: StepInfo) -> None:
        """Validate a method's masks against the density policy, then copy them into the buffers."""
        check_masks(self.updater.name, self.sparse_layers, new_masks, require_all=require_all)
        new_masks = project_masks(self.structure, self.sparse_layers, new_masks)
        by_name = {layer.name: layer for layer in self.sparse_layers}
        counts = {name: int(new_masks.get(name, layer.mask).sum()) for name, layer in by_name.items()}
        problems = count_problems(self.updater, self.sparse_layers, counts, info, self.structure)
        if problems:
            raise MaskInvariantError(f"{self.updater.name}: {problems[0]}")
        self._last_info = info
        for name, mask in new_masks.items():
            by_name[name].mask.copy_(mask.to(by_name[name].mask.device))

    # -- reporting ---------------------------------------------------------------------------------
    def itop_rate(self) -> float:
        """R_s: the fraction of sparsified weights that were ever active (Liu et al. 2021)."""
        total = sum(layer.numel for layer in self.sparse_layers)
        return sum(int(f.sum()) for f in self.fired.values()) / total if total else 1.0

    def realised_sparsity(self) -> dict[str, float]:
        counts = [(layer.numel, int(layer.mask.sum())) for layer in self.layers]
        sparse = [(layer.numel, int(layer.mask.sum())) for layer in self.sparse_layers]
        return realised_sparsity(sparse, counts)

    def targets(self, info: StepInfo | None) -> tuple[dict[str, int], int | None]:
        """Per-layer counts and total (None: no rule) after an update at ``info.step`` (None: the end)."""
        return count_targets(self.updater, self.sparse_layers, info)

    def violations(self, *, final: bool = False) -> list[str]:
        """Every broken invariant, as readable lines (empty when all hold). ``final`` also requires a
        scheduled method to have reached the plan's counts, as at the end of training."""
        counts = {layer.name: int(layer.mask.sum()) for layer in self.sparse_layers}
        scheduled = self.updater.needs.density_policy in ("scheduled", "scheduled_global")
        info = self._last_info if scheduled and not final else None
        problems = count_problems(self.updater, self.sparse_layers, counts, info, self.structure)
        problems += structure_problems(self.structure, self.sparse_layers)
        for layer in self.sparse_layers:
            problems += zero_problems(layer, self.backward.mask(layer), self._masked_state()) + self.backward.problems(layer)
        return problems

    def backward_densities(self) -> dict[str, float] | None:
        """Per-layer density of the backward sets (None without them): what the weight-gradient costs."""
        return self.backward.densities()

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": {k: v.clone() for k, v in self.fired.items()},
            "records": [r.to_json() for r in self.records],
            "update_seconds": self.update_seconds,
            "step_hook_seconds": self.step_hook_seconds,
            "skipped_steps": self.skipped_steps,
            "previous_step_skipped": self.previous_step_skipped,
            "updater": self.updater.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired = {k: v.to(self.layers[0].mask.device) for k, v in state["fired"].items()}
        self.records = [TopologyRecord.from_json(r) for r in state["records"]]
        self.update_seconds = float(state["update_seconds"])
        # Checkpoints from before these counters existed resume with them at zero.
        self.step_hook_seconds = float(state.get("step_hook_seconds", 0.0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.previous_step_skipped = bool(state.get("previous_step_skipped", False))
        self._last_info = self.info(self.records[-1].step - 1 if self.records else -1)
        self.updater.load_state_dict(state["updater"])
