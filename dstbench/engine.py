"""The sparse-training engine: every invariant of DST lives here, so no method can break one.

Per training step (see DESIGN.md, "The flow of one training step")::

    loss.backward()
    run = engine.after_backward(step)   # stash dense grads, method's on_step, mask gradients
    if run: optimizer.step()            # RigL may skip the weight update on its mask steps
    engine.after_optimizer_step(step)   # weights and optimizer state back to zero off the mask,
                                        # then the topology update if the method's schedule says so

Guarantees:

* every prunable weight has a persistent boolean buffer ``weight_mask``;
* each sparsified layer holds exactly its target count (or what the method's declared density policy
  allows), checked at every change;
* weights, and every optimizer-state tensor shaped like the weight, are zero off the mask after every
  step, which covers SGD momentum and Adam moments alike; grown weights and their state start at 0
  (a method that declares ``masked_optimizer=False``, SNFS, keeps its dense state);
* all randomness a method sees comes from a generator seeded by (run seed, step, purpose), so reruns
  and distributed ranks produce the same masks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .distributions import SparsityPlan, realised_sparsity
from .layers import find_prunable_layers
from .topology import TopologyRecord, layer_change
from .updater import MaskedLayer, MaskUpdater, StepInfo, UpdateContext

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
        updater.bind(self)

    # -- helpers -----------------------------------------------------------------------------------
    def info(self, step: int) -> StepInfo:
        return StepInfo(step=step, steps_per_epoch=self.steps_per_epoch, total_epochs=self.total_epochs)

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
            **extra,
        )

    def masks(self) -> dict[str, torch.Tensor]:
        return {layer.name: layer.mask for layer in self.layers}

    # -- lifecycle ---------------------------------------------------------------------------------
    def initialize(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Choose the initial masks, zero the pruned weights, and run a "before training" update."""
        if self.updater.needs.init_batch and batch is None:
            raise ValueError(f"method {self.updater.name!r} needs a batch at initialisation")
        ctx = self.context(-1, "init", batch=batch)
        self._install(self.updater.init_masks(ctx), require_all=True)
        self.fired = {layer.name: layer.mask.clone() for layer in self.sparse_layers}
        self.apply_masks()
        if self.on_masks is not None:
            self.on_masks(0, 0, self.masks(), None)
        if self.updater.is_update_step(self.info(-1)):
            self._update(-1)

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
            masks = [layer.mask for layer in self.sparse_layers if layer.weight.grad is not None]
            if grads:
                torch._foreach_mul_(grads, masks)
        return not (self._pending_update and self.updater.skips_optimizer_step(info))

    def after_optimizer_step(self, step: int) -> None:
        """After ``optimizer.step()``: restore the zeros, then the scheduled topology update."""
        self.apply_masks()
        if self.updater.needs.per_step_hook:
            start = time.perf_counter()
            self.updater.after_step(self.context(step, "after_step", batch=self._batch))
            self._count_step_hook(start)
        if self._pending_update:
            self._update(step)
        self._pending_update = False
        self._stash = {}
        self._batch = None

    def _count_step_hook(self, start: float) -> None:
        if self.sparse_layers and self.sparse_layers[0].mask.is_cuda:
            torch.cuda.synchronize()
        self.step_hook_seconds += time.perf_counter() - start

    def apply_masks(self) -> None:
        """Weights (and, unless the method keeps them dense, optimizer state) to zero off the mask."""
        if not self.sparse_layers:
            return
        with torch.no_grad():
            torch._foreach_mul_([layer.weight for layer in self.sparse_layers], self._mask_list())
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                states, masks = self._state_tensors(lambda layer: layer.mask)
                if states:
                    torch._foreach_mul_(states, masks)

    def _mask_list(self) -> list[torch.Tensor]:
        return [layer.mask for layer in self.sparse_layers]

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
        new_masks = self.updater.update(self.context(step, "update"))
        self._install(new_masks, require_all=False)
        with torch.no_grad():
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                # Survivors keep their state; grown and dropped entries start from zero. A method
                # with dense optimizer state (SNFS) keeps the momentum that made a weight grow.
                states, keep = self._state_tensors(lambda layer: layer.mask & before[layer.name])
                if states:
                    torch._foreach_mul_(states, keep)
            self.apply_masks()
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

    def _install(self, new_masks: dict[str, torch.Tensor], *, require_all: bool) -> None:
        """Validate a method's masks against the density policy, then copy them into the buffers."""
        by_name = {layer.name: layer for layer in self.sparse_layers}
        unknown = set(new_masks) - set(by_name)
        if unknown:
            raise MaskInvariantError(f"{self.updater.name}: masks for non-sparsified layers {sorted(unknown)}")
        if require_all and set(new_masks) != set(by_name):
            missing = sorted(set(by_name) - set(new_masks))
            raise MaskInvariantError(f"{self.updater.name}: no initial mask for {missing}")
        policy = self.updater.needs.density_policy
        for name, mask in new_masks.items():
            layer = by_name[name]
            if mask.shape != layer.weight.shape or mask.dtype != torch.bool:
                raise MaskInvariantError(
                    f"{self.updater.name}: mask for {name} must be bool {tuple(layer.weight.shape)}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            count = int(mask.sum())
            if (policy == "exact" and count != layer.k) or (policy == "at_least" and count < layer.k):
                raise MaskInvariantError(
                    f"{self.updater.name}: layer {name} has {count} active weights, target {layer.k} ({policy})"
                )
        if policy == "global":
            total = sum(int(new_masks.get(n, layer.mask).sum()) for n, layer in by_name.items())
            budget = sum(layer.k for layer in self.sparse_layers)
            if total != budget:
                raise MaskInvariantError(f"{self.updater.name}: {total} active weights in all, budget {budget}")
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

    def violations(self) -> list[str]:
        """Every broken invariant, as readable lines (empty when all hold)."""
        problems = []
        policy = self.updater.needs.density_policy
        if policy == "global":
            total = sum(int(layer.mask.sum()) for layer in self.sparse_layers)
            budget = sum(layer.k for layer in self.sparse_layers)
            if total != budget:
                problems.append(f"{total} active weights in all, budget {budget}")
        for layer in self.sparse_layers:
            count = int(layer.mask.sum())
            if (policy == "exact" and count != layer.k) or (policy == "at_least" and count < layer.k):
                problems.append(f"{layer.name}: {count} active, target {layer.k}")
            pruned = layer.weight.detach()[~layer.mask]
            if pruned.numel() and float(pruned.abs().max()) != 0.0:
                problems.append(f"{layer.name}: pruned weights are non-zero")
            if self.optimizer is not None and self.updater.needs.masked_optimizer:
                for key, value in self.optimizer.state.get(layer.weight, {}).items():
                    if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                        if bool((value[~layer.mask] != 0).any()):
                            problems.append(f"{layer.name}: optimizer state {key!r} non-zero off the mask")
        return problems

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": {k: v.clone() for k, v in self.fired.items()},
            "records": [r.to_json() for r in self.records],
            "update_seconds": self.update_seconds,
            "step_hook_seconds": self.step_hook_seconds,
            "updater": self.updater.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired = {k: v.to(self.layers[0].mask.device) for k, v in state["fired"].items()}
        self.records = [TopologyRecord.from_json(r) for r in state["records"]]
        self.update_seconds = float(state["update_seconds"])
        self.step_hook_seconds = float(state.get("step_hook_seconds", 0.0))
        self.updater.load_state_dict(state["updater"])
