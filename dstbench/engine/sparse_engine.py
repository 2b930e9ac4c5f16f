"""The sparse-training engine: every invariant of DST lives here, so no method can break one.

One training step, in one call::

    loss.backward()
    engine.step(step, batch)            # stash dense grads, method's on_step, mask gradients,
                                        # optimizer.step() (RigL may skip it on its mask steps),
                                        # weights and optimizer state back to zero off the mask,
                                        # then the topology update if the method's schedule says so
    optimizer.zero_grad()

Guarantees:

* every prunable weight has a persistent boolean buffer ``weight_mask``;
* each sparsified layer holds exactly its target count (or what the method's declared density policy
  allows: at least it, the same total, or the method's scheduled counts), checked at every change, and
  a scheduled method must end at the plan;
* weights, and every optimizer-state tensor shaped like the weight, are zero off the mask after every
  step, which covers SGD momentum and Adam moments alike; grown weights and their state start at 0
  (a method that declares ``masked_optimizer=False``, SNFS, keeps its dense state);
* all randomness a method sees comes from a generator seeded by (run seed, step, purpose), so reruns
  and distributed ranks produce the same masks;
* a method with a backward set ``B`` (``needs.backward_set``, Top-KAST) trains on ``B`` while the
  forward pass sees only ``M``: between steps the weights hold ``M * theta`` and the values on
  ``B - M`` wait in the persistent buffer ``weight_reserve``; they are put back for the backward
  pass's consumers (per-step hook, optimizer step, topology update) and set aside again after.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dstbench.core.distributions import SparsityPlan, check_distribution_policy, realised_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import find_prunable_layers
from dstbench.engine.topology import TopologyRecord, layer_change
from dstbench.core.updater import MaskedLayer, MaskUpdater, StepInfo, UpdateContext

__all__ = ["SparseEngine", "derive_seed", "MaskInvariantError"]

MaskCallback = Callable[[int, int, dict[str, torch.Tensor], "TopologyRecord | None"], None]


class MaskInvariantError(RuntimeError):
    """A method returned masks the engine cannot accept (a bug in the method, not bad user input)."""


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
    ) -> None:
        if plan.sparsified:
            check_distribution_policy(plan.distribution, updater.needs.density_policy, updater.name)
        self.model = model
        self.plan = plan
        self.updater = updater
        self.optimizer = optimizer
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.total_epochs = total_epochs
        self.on_masks = on_masks
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
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skipped_steps = 0
        self.previous_step_skipped = False
        self._last_info: StepInfo | None = None  # the step of the last installed masks (scheduled counts)
        self.step_hook_seconds = 0.0
        if updater.needs.backward_set:
            for layer in self.sparse_layers:
                weight = layer.weight
                if "weight_backward_mask" not in dict(layer.module.named_buffers(recurse=False)):
                    layer.module.register_buffer("weight_backward_mask", torch.ones_like(weight, dtype=torch.bool))
                    layer.module.register_buffer("weight_reserve", torch.zeros_like(weight.detach()))
        updater.bind(self)

    # -- helpers -----------------------------------------------------------------------------------
    def info(self, step: int) -> StepInfo:
        return StepInfo(
            step=step,
            steps_per_epoch=self.steps_per_epoch,
            total_epochs=self.total_epochs,
            skipped_steps=self.skipped_steps,
            previous_step_skipped=self.previous_step_skipped,
        )

    def generator(self, step: int, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, step, stream))

    def context(self, step: int, stream: str, **extra: Any) -> UpdateContext:
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0
        return UpdateContext(
            info=self.info(step),
            layers=self.layers,
            rng=self.generator(step, stream),
            lr=lr,
            optimizer=self.optimizer,
            dense_grads=self._stash,
            loss_fn=self.loss_fn,
            model=self.model,
            backward_masks=self.backward_masks(),
            **extra,
        )

    def masks(self) -> dict[str, torch.Tensor]:
        return {layer.name: layer.mask for layer in self.layers}

    def backward_masks(self) -> dict[str, torch.Tensor]:
        """The backward sets ``B`` (empty for methods without one, whose ``B`` is their mask)."""
        if not self.updater.needs.backward_set:
            return {}
        return {layer.name: _buffer(layer, "weight_backward_mask") for layer in self.sparse_layers}

    def _backward(self, layer: MaskedLayer) -> torch.Tensor:
        return _buffer(layer, "weight_backward_mask") if self.updater.needs.backward_set else layer.mask

    # -- lifecycle ---------------------------------------------------------------------------------
    def initialize(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Choose the initial masks, zero the pruned weights, and run a "before training" update."""
        if self.updater.needs.init_batch and batch is None:
            raise ValueError(f"method {self.updater.name!r} needs a batch at initialisation")
        ctx = self.context(-1, "init", batch=batch)
        self._install(self.updater.init_masks(ctx), require_all=True, info=ctx.info)
        start = self.updater.initial_weights(ctx)
        if start is not None:
            load_initial_weights(self.model, start, self.updater.name)
        self._install_backward(ctx, require_all=True)
        self.fired = {layer.name: layer.mask.clone() for layer in self.sparse_layers}
        self.apply_masks()
        if self.on_masks is not None:
            self.on_masks(0, 0, self.masks(), None)
        if self.updater.is_update_step(self.info(-1)):
            # As at every step: B - M back in the weights for the update, set aside after it.
            self._restore_reserve()
            self._update(-1)
            self._set_aside_reserve()

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
        if self.after_backward(step, batch) and self.optimizer is not None:
            self.optimizer.step()
        self.after_optimizer_step(step)

    def is_plain_step(self, step: int) -> bool:
        """A step on which the method decides nothing (no update, no per-step hook, no backward set):
        its whole work is :meth:`masked_step`."""
        needs = self.updater.needs
        return not (needs.per_step_hook or needs.backward_set or self.updater.is_update_step(self.info(step)))

    @torch.no_grad()
    def masked_step(self) -> None:
        """A plain step's tensor work: mask the gradients, ``optimizer.step()``, re-mask. Tensors only,
        changed in place, so the compiled stepper compiles it and the CUDA-graph stepper captures it."""
        if self.updater.needs.masked_optimizer:
            grads = [layer.weight.grad for layer in self.sparse_layers if layer.weight.grad is not None]
            masks = [self._backward(layer) for layer in self.sparse_layers if layer.weight.grad is not None]
            if grads:
                torch._foreach_mul_(grads, masks)
        if self.optimizer is not None:
            self.optimizer.step()
        self.apply_masks()

    def after_backward(self, step: int, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> bool:
        """Between ``backward()`` and ``optimizer.step()``. Returns whether to take the optimizer step.

        ``batch`` is this step's (inputs, targets), handed to per-step hooks that need a second
        forward/backward on the same data (BiDST's strict eq. 11 variant).
        """
        info = self.info(step)
        self._batch = batch
        needs = self.updater.needs
        self._pending_update = self.updater.is_update_step(info)
        self._stash = {}
        self._restore_reserve()
        if self._pending_update and needs.dense_grad != "never" and needs.masked_optimizer:
            # The update runs after the optimizer step, when the gradients are already masked.
            self._stash = {
                layer.name: layer.weight.grad.detach().clone()
                for layer in self.sparse_layers
                if layer.weight.grad is not None
            }
        if needs.per_step_hook:
            start = time.perf_counter()
            self.updater.on_step(self.context(step, "step", batch=batch))
            self._count_step_hook(start)
        if needs.masked_optimizer:
            grads = [layer.weight.grad for layer in self.sparse_layers if layer.weight.grad is not None]
            masks = [self._backward(layer) for layer in self.sparse_layers if layer.weight.grad is not None]
            if grads:
                torch._foreach_mul_(grads, masks)
        skip = self._pending_update and self.updater.skips_optimizer_step(info)
        self.skipped_steps += int(skip)
        self.previous_step_skipped = skip
        return not skip

    def after_optimizer_step(self, step: int) -> None:
        """After ``optimizer.step()``: restore the zeros, then the scheduled topology update."""
        self._zero_off_backward()
        if self.updater.needs.per_step_hook:
            start = time.perf_counter()
            self.updater.after_step(self.context(step, "after_step", batch=self._batch))
            self._count_step_hook(start)
        if self._pending_update:
            self._update(step)
        self._set_aside_reserve()
        self._pending_update = False
        self._stash = {}
        self._batch = None

    def _count_step_hook(self, start: float) -> None:
        if self.sparse_layers and self.sparse_layers[0].mask.is_cuda:
            torch.cuda.synchronize()
        self.step_hook_seconds += time.perf_counter() - start

    def apply_masks(self) -> None:
        """Weights (and, unless the method keeps them dense, optimizer state) to zero off the backward
        set, then the forward view: weights zero off the mask, ``B - M`` set aside."""
        self._zero_off_backward()
        self._set_aside_reserve()

    def _zero_off_backward(self) -> None:
        if not self.sparse_layers:
            return
        with torch.no_grad():
            torch._foreach_mul_([layer.weight for layer in self.sparse_layers], self._backward_list())
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                states, masks = self._state_tensors(self._backward)
                if states:
                    torch._foreach_mul_(states, masks)

    def _set_aside_reserve(self) -> None:
        """Backward-set methods: the values on ``B - M`` go to ``weight_reserve``, the weight keeps ``M``."""
        if not self.updater.needs.backward_set:
            return
        with torch.no_grad():
            for layer in self.sparse_layers:
                reserve = _buffer(layer, "weight_reserve")
                outside = _buffer(layer, "weight_backward_mask") & ~layer.mask
                reserve.copy_(layer.weight.detach() * outside)
                layer.weight.mul_(layer.mask)

    def _restore_reserve(self) -> None:
        """Backward-set methods: put the ``B - M`` values back before anything reads or trains them."""
        if not self.updater.needs.backward_set:
            return
        with torch.no_grad():
            for layer in self.sparse_layers:
                reserve = _buffer(layer, "weight_reserve")
                layer.weight.add_(reserve.to(layer.weight.dtype))
                reserve.zero_()

    def _backward_list(self) -> list[torch.Tensor]:
        return [self._backward(layer) for layer in self.sparse_layers]

    def _state_tensors(
        self, mask_of: Callable[[MaskedLayer], torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every optimizer-state tensor shaped like a sparsified weight, paired with its mask."""
        states: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        assert self.optimizer is not None
        for layer in self.sparse_layers:
            for value in self.optimizer.state.get(layer.weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                    states.append(value)
                    masks.append(mask_of(layer))
        return states, masks

    # -- topology updates --------------------------------------------------------------------------
    def _update(self, step: int) -> None:
        start = time.perf_counter()
        info = self.info(step)
        before = {layer.name: layer.mask.clone() for layer in self.sparse_layers}
        before_backward = {layer.name: self._backward(layer).clone() for layer in self.sparse_layers}
        ctx = self.context(step, "update")
        self._install(self.updater.update(ctx), require_all=False, info=info)
        self._install_backward(ctx, require_all=False)
        with torch.no_grad():
            # Survivors (in B before and after) keep their weight and optimizer state; everything
            # else starts from zero, or from the values the method supplied for grown entries. A
            # method with dense optimizer state (SNFS) keeps the momentum that made a weight grow.
            kept = {layer.name: self._backward(layer) & before_backward[layer.name] for layer in self.sparse_layers}
            torch._foreach_mul_([layer.weight for layer in self.sparse_layers], [kept[layer.name] for layer in self.sparse_layers])
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                states, keep = self._state_tensors(lambda layer: kept[layer.name])
                if states:
                    torch._foreach_mul_(states, keep)
            self._apply_grown_values(ctx, before_backward)
            self._zero_off_backward()
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

    def _apply_grown_values(self, ctx: UpdateContext, before_backward: dict[str, torch.Tensor]) -> None:
        """Entries that became active (or entered the backward set) with no value to keep start at the
        method's ``grown_values``."""
        by_name = {layer.name: layer for layer in self.sparse_layers}
        unknown = set(ctx.grown_values) - set(by_name)
        if unknown:
            raise MaskInvariantError(f"{self.updater.name}: grown values for unknown layers {sorted(unknown)}")
        for name, values in ctx.grown_values.items():
            layer = by_name[name]
            if values.shape != layer.weight.shape:
                raise MaskInvariantError(
                    f"{self.updater.name}: grown values for {name} must be shaped {tuple(layer.weight.shape)}"
                )
            grown = self._backward(layer) & ~before_backward[name]
            layer.weight.data[grown] = values.to(layer.weight.device, layer.weight.dtype)[grown]

    def _install_backward(self, ctx: UpdateContext, *, require_all: bool) -> None:
        """Validate and store the method's backward sets (B must contain the forward mask)."""
        if not self.updater.needs.backward_set:
            return
        masks = self.updater.backward_masks(self.context(ctx.info.step, "backward"))
        by_name = {layer.name: layer for layer in self.sparse_layers}
        if require_all and set(masks) != set(by_name):
            raise MaskInvariantError(f"{self.updater.name}: no backward set for {sorted(set(by_name) - set(masks))}")
        for name, mask in masks.items():
            layer = by_name.get(name)
            if layer is None or mask.shape != layer.weight.shape or mask.dtype != torch.bool:
                raise MaskInvariantError(f"{self.updater.name}: backward set for {name} must be a bool mask of its weight")
            mask = mask.to(layer.mask.device)
            if bool((layer.mask & ~mask).any()):
                raise MaskInvariantError(f"{self.updater.name}: backward set of {name} does not contain its mask")
            _buffer(layer, "weight_backward_mask").copy_(mask)

    def _install(self, new_masks: dict[str, torch.Tensor], *, require_all: bool, info: StepInfo) -> None:
        """Validate a method's masks against the density policy, then copy them into the buffers."""
        by_name = {layer.name: layer for layer in self.sparse_layers}
        unknown = set(new_masks) - set(by_name)
        if unknown:
            raise MaskInvariantError(f"{self.updater.name}: masks for non-sparsified layers {sorted(unknown)}")
        if require_all and set(new_masks) != set(by_name):
            missing = sorted(set(by_name) - set(new_masks))
            raise MaskInvariantError(f"{self.updater.name}: no initial mask for {missing}")
        for name, mask in new_masks.items():
            layer = by_name[name]
            if mask.shape != layer.weight.shape or mask.dtype != torch.bool:
                raise MaskInvariantError(
                    f"{self.updater.name}: mask for {name} must be bool {tuple(layer.weight.shape)}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
        counts = {name: int(new_masks.get(name, layer.mask).sum()) for name, layer in by_name.items()}
        problems = self._count_problems(counts, info)
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
        """The count each layer must hold and the total (None: no rule on the total) after an update
        decided at ``info.step``, by the declared density policy; ``None``: the end of training."""
        policy = self.updater.needs.density_policy
        plan = {layer.name: layer.k for layer in self.sparse_layers}
        if info is not None and policy == "scheduled":
            scheduled = self.updater.layer_targets(info, self.sparse_layers)
            if scheduled is None:
                raise MaskInvariantError(f"{self.updater.name}: density_policy='scheduled' needs layer_targets()")
            return {**plan, **scheduled}, None
        if info is not None and policy == "scheduled_global":
            total = self.updater.total_target(info, self.sparse_layers)
            if total is None:
                raise MaskInvariantError(f"{self.updater.name}: density_policy='scheduled_global' needs total_target()")
            return plan, total
        return plan, sum(plan.values()) if policy in ("global", "scheduled_global") else None

    def _count_problems(self, counts: dict[str, int], info: StepInfo | None) -> list[str]:
        """Counts against the declared policy at ``info`` (``None``: the end of training, the plan)."""
        policy = self.updater.needs.density_policy
        targets, total = self.targets(info)
        problems = []
        if total is not None and sum(counts.values()) != total:
            problems.append(f"{sum(counts.values())} active weights in all, target {total} ({policy})")
        for name, count in counts.items():
            target = targets[name]
            if (
                (policy in ("exact", "scheduled") and count != target)
                or (policy == "at_least" and count < target)
                or (policy == "at_most" and count > target)
            ):
                problems.append(f"layer {name} has {count} active weights, target {target} ({policy})")
        return problems

    def violations(self, *, final: bool = False) -> list[str]:
        """Every broken invariant, as readable lines (empty when all hold). ``final`` also requires a
        scheduled method to have reached the plan's counts, as at the end of training."""
        counts = {layer.name: int(layer.mask.sum()) for layer in self.sparse_layers}
        scheduled = self.updater.needs.density_policy in ("scheduled", "scheduled_global")
        problems = self._count_problems(counts, self._last_info if scheduled and not final else None)
        for layer in self.sparse_layers:
            pruned = layer.weight.detach()[~layer.mask]
            if pruned.numel() and float(pruned.abs().max()) != 0.0:
                problems.append(f"{layer.name}: pruned weights are non-zero")
            backward = self._backward(layer)
            if self.updater.needs.backward_set:
                if bool((layer.mask & ~backward).any()):
                    problems.append(f"{layer.name}: backward set does not contain the mask")
                if bool((_buffer(layer, "weight_reserve")[~(backward & ~layer.mask)] != 0).any()):
                    problems.append(f"{layer.name}: reserved values outside the backward set")
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                for key, value in self.optimizer.state.get(layer.weight, {}).items():
                    if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                        if bool((value[~backward] != 0).any()):
                            problems.append(f"{layer.name}: optimizer state {key!r} non-zero off the mask")
        return problems

    def backward_densities(self) -> dict[str, float] | None:
        """Per-layer density of the backward sets (None without them): what the weight-gradient costs."""
        if not self.updater.needs.backward_set:
            return None
        return {layer.name: int(self._backward(layer).sum()) / layer.numel for layer in self.sparse_layers}

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


# Buffers the engine owns: never taken from a method's initial weights.
_ENGINE_BUFFERS = ("weight_mask", "weight_backward_mask", "weight_reserve")


def load_initial_weights(model: nn.Module, state: Mapping[str, torch.Tensor], owner: str) -> None:
    """Every parameter and buffer of ``model`` from ``state`` (the engine's mask buffers excepted), or
    one line saying why they do not fit."""
    kept = {key: value for key, value in state.items() if not key.endswith(_ENGINE_BUFFERS)}
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"{owner}: its initial weights do not fit this model: {str(exc).splitlines()[-1].strip()}") from None
    missing = [key for key in missing if not key.endswith(_ENGINE_BUFFERS)]
    if missing or unexpected:
        raise ConfigError(f"{owner}: its initial weights do not fit this model (e.g. {(missing or unexpected)[0]!r}); same --model?")


def _buffer(layer: MaskedLayer, name: str) -> torch.Tensor:
    buffer = getattr(layer.module, name)
    assert isinstance(buffer, torch.Tensor)
    return buffer
