"""The fast training step: ``torch.compile`` on CPU and CUDA, one captured CUDA graph per step on CUDA.

Eager training (the trainer's own loop) stays the reference; this module only changes *how* a step
runs, never what it computes. It relies on one fact about the engine: masks, weights, gradients and
optimizer state are tensors changed **in place**, so a topology update writes new values into the
same storage. Nothing the compiled code guards on (shapes, dtypes, devices, object identity) changes,
so an update cannot trigger a recompilation, and a captured CUDA graph keeps reading the new masks.

Which steps take the fast path (:meth:`FastStep.is_plain`): those on which the engine has nothing but
tensor work to do, i.e. mask the gradients, take the optimizer step, re-mask weights and optimizer
state. A step on which the method decides (a topology-update step, RigL's dense-gradient stash and
skipped optimizer step) or a method with per-step hooks (BiDST) runs the engine eagerly, around the
compiled model; the run says so once in the log. Update steps are rare (every hundreds of steps), so
they cost nothing measurable.

Modes:

* ``compile`` (CPU, or CUDA with ``--no-cuda-graph``): ``torch.compile(model)`` (forward, and the
  backward through AOTAutograd) plus a compiled *sparse optimizer step* (gradient masking, SGD,
  re-masking) with the learning rate held in a tensor, so a schedule change is a ``fill_`` and not a
  recompilation. Dynamo's counters give the number of compiled graphs and graph breaks.
* ``cuda_graph`` (CUDA, the default with ``--compile``): the whole step (forward, backward, gradient
  masking, fused SGD with a device-tensor LR, re-masking) captured once in a ``torch.cuda.CUDAGraph``
  after a few eager warm-up steps on a side stream, then replayed with the batch copied into static
  inputs. No re-capture ever happens: updates write into the captured buffers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError

__all__ = ["FastStep", "set_lr", "get_lr", "dynamo_counts"]
log = logging.getLogger(__name__)

# Eager steps before the CUDA graph is captured: lazily created state (momentum buffers, cuDNN
# algorithm choices, autocast caches) must exist before capture (PyTorch's CUDA-graph guidance).
GRAPH_WARMUP_STEPS = 3


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's learning rate; a tensor LR is written in place (no recompile, no re-capture)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


class CudaGraphRecorder:
    """Captures a function once into a ``torch.cuda.CUDAGraph``; each replay reruns its kernels on the
    same memory and returns the same (refilled) output tensors."""

    def __init__(self, device: torch.device) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def capture(self, fn: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.cuda.graph(self.graph):
            self.outputs = fn()

    def replay(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.outputs is not None
        self.graph.replay()
        return self.outputs


def dynamo_counts() -> dict[str, int]:
    """Process-wide totals of graphs dynamo compiled and of graph breaks it took."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


class FastStep:
    """Runs the training steps of one run compiled or graph-captured; see the module docstring."""

    graph_device_types: tuple[str, ...] = ("cuda",)
    graph_recorder: Callable[[torch.device], Any] = CudaGraphRecorder

    def __init__(
        self,
        model: nn.Module,
        engine: SparseEngine,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        amp: bool,
        cuda_graph: bool,
        grad_accum: int,
        batch_size: int,
    ) -> None:
        self.model = model
        self.engine = engine
        self.optimizer = optimizer
        self.criterion = criterion
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.batch_size = batch_size
        needs = engine.updater.needs
        self.eager_hooks = needs.per_step_hook
        graphs = cuda_graph and device.type in self.graph_device_types and not self.eager_hooks
        self.mode = "cuda_graph" if graphs else "compile"
        if self.mode == "cuda_graph" and grad_accum != 1:
            raise ConfigError("--compile with CUDA graphs needs --grad-accum 1 (or pass --no-cuda-graph)")
        if self.eager_hooks:
            log.warning(
                "%s has per-step hooks: they run eagerly around the compiled model%s",
                engine.updater.name,
                " (no CUDA graph)" if cuda_graph and device.type == "cuda" else "",
            )
        for group in optimizer.param_groups:
            # A tensor LR: the schedule writes into it, so neither compiled code nor a graph sees a new value.
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
            if self.mode == "cuda_graph":
                # Fused SGD takes a device-tensor LR without a host sync, so it can be captured.
                group["fused"], group["foreach"] = True, False
        self._start = dynamo_counts()
        self._last_graphs = self._start["graphs"]
        self._records_seen = len(engine.records)
        self._graphs_at_first_update: int | None = None
        self.fast_steps = 0
        self.eager_steps = 0
        self.captures = 0
        self._graph: Any = None
        self._static: dict[str, torch.Tensor] = {}
        self._side_stream: torch.cuda.Stream | None = None
        if self.mode == "compile":
            self.forward_model: nn.Module = torch.compile(model)  # type: ignore[assignment]
            self._compiled_sparse_step: Callable[[], None] = torch.compile(self._sparse_step)
        else:
            self.forward_model = model
            if device.type == "cuda":
                self._side_stream = torch.cuda.Stream(device=device)

    # -- which path ------------------------------------------------------------------------------
    def is_plain(self, step: int) -> bool:
        """A step on which the engine only masks and steps (no method decision, no per-step hook)."""
        needs = self.engine.updater.needs
        plain = not self.eager_hooks and not needs.backward_set  # backward sets: the engine's eager path
        return plain and not self.engine.updater.is_update_step(self.engine.info(step))

    def compiles(self, step: int) -> bool:
        """Whether this step's optimizer part runs compiled (``compile`` mode): a plain step after at
        least one eager step, which creates the optimizer's lazily allocated state first."""
        return self.mode == "compile" and self.eager_steps > 0 and self.is_plain(step)

    def _note_updates(self) -> None:
        """Remember the graph count at the first topology update that follows compiled steps."""
        if len(self.engine.records) != self._records_seen:
            self._records_seen = len(self.engine.records)
            if self._graphs_at_first_update is None and self._last_graphs > self._start["graphs"]:
                self._graphs_at_first_update = self._last_graphs

    # -- the tensor work of a plain step -----------------------------------------------------------
    @torch.no_grad()
    def _sparse_step(self) -> None:
        """Gradient masking, optimizer step, re-masking: ``SparseEngine.after_backward`` and
        ``after_optimizer_step`` on a step without a method decision (kept equal by the eager-vs-
        compiled tests)."""
        engine = self.engine
        if engine.updater.needs.masked_optimizer:
            grads = [layer.weight.grad for layer in engine.sparse_layers if layer.weight.grad is not None]
            masks = [layer.mask for layer in engine.sparse_layers if layer.weight.grad is not None]
            if grads:
                torch._foreach_mul_(grads, masks)
        self.optimizer.step()
        engine.apply_masks()

    def optimizer_step(self) -> None:
        """The compiled sparse optimizer step of a plain step (``compile`` mode)."""
        self._note_updates()
        self._compiled_sparse_step()
        self.engine.note_plain_step()
        self.fast_steps += 1
        self._last_graphs = dynamo_counts()["graphs"]

    # -- CUDA graph mode ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            # No autocast weight cache inside a graph (PyTorch's CUDA-graph + AMP guidance).
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def graph_ready(self, step: int, x: torch.Tensor) -> bool:
        """Whether this step replays the captured graph (captures it first when due)."""
        if self.mode != "cuda_graph" or not self.is_plain(step):
            return False
        if self._graph is None:
            if self.eager_steps < GRAPH_WARMUP_STEPS or x.shape[0] != self.batch_size:
                return False  # capture a full batch: a short last batch of an epoch runs eagerly
            self._capture(x)
        return tuple(x.shape) == tuple(self._static["x"].shape)

    def warmup_context(self) -> contextlib.AbstractContextManager[Any]:
        """Eager steps before capture run on a side stream, as CUDA-graph capture requires."""
        if self.mode == "cuda_graph" and self._graph is None and self._side_stream is not None:
            self._side_stream.wait_stream(torch.cuda.current_stream(self.device))
            return torch.cuda.stream(self._side_stream)
        return contextlib.nullcontext()

    def after_warmup_step(self) -> None:
        if self.mode == "cuda_graph" and self._graph is None and self._side_stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._side_stream)

    def _capture(self, x: torch.Tensor) -> None:
        self._static = {
            "x": torch.zeros_like(x),
            "y": torch.zeros(x.shape[0], dtype=torch.int64, device=self.device),
        }
        self.optimizer.zero_grad(set_to_none=True)  # grads are allocated from the graph's pool
        graph = self.graph_recorder(self.device)
        graph.capture(self._whole_step)
        self._graph = graph
        self.captures += 1

    def _whole_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the graph holds: forward, backward, gradient masking, optimizer step, re-masking."""
        with self._autocast():
            logits = self.model(self._static["x"])
            loss = self.criterion(logits.float(), self._static["y"])
        loss.backward()
        self._sparse_step()
        return loss, logits

    def replay(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One whole training step from the captured graph; returns (loss, logits) (static outputs)."""
        assert self._graph is not None
        self._static["x"].copy_(x)
        self._static["y"].copy_(y)
        loss, logits = self._graph.replay()
        self.engine.note_plain_step()
        self.fast_steps += 1
        return loss, logits

    def before_eager_step(self) -> None:
        """After a capture, replays leave their gradients in the captured tensors; an eager backward
        would add to them, so they are zeroed in place first."""
        if self._graph is not None:
            self.optimizer.zero_grad(set_to_none=False)

    # -- reporting ---------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Eager steps in graph mode keep the captured gradient tensors (zeroed in place)."""
        self.optimizer.zero_grad(set_to_none=self.mode != "cuda_graph" or self._graph is None)

    def report(self) -> dict[str, Any]:
        """For ``summary.json``: the mode, how many steps took which path, and dynamo's counts."""
        now = dynamo_counts()
        after = None if self._graphs_at_first_update is None else now["graphs"] - self._graphs_at_first_update
        return {
            "mode": self.mode,
            "fast_steps": self.fast_steps,
            "eager_steps": self.eager_steps,
            "eager_hooks": self.eager_hooks,
            "compiled_graphs": now["graphs"] - self._start["graphs"],
            "graph_breaks": now["graph_breaks"] - self._start["graph_breaks"],
            "recompilations_after_first_update": after,
            "cuda_graph_captures": self.captures,
        }
