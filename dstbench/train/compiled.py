"""The fast steppers: ``torch.compile`` (CPU and CUDA) and one captured CUDA graph per step (CUDA).

The eager stepper stays the reference; these only change *how* a step runs, never what it computes.
They rely on one fact about the engine: masks, weights, gradients and optimizer state are tensors
changed **in place**, so a topology update writes new values into the same storage. Nothing the
compiled code guards on (shapes, dtypes, devices, object identity) changes, so an update cannot
trigger a recompilation, and a captured CUDA graph keeps reading the new masks.

Which steps take the fast path: every step with no topology update due
(:meth:`SparseEngine.is_capturable_step`), whose whole work is the engine's
:class:`~dstbench.engine.captured.CapturedStep` (the backward set put back, the method's per-step hook,
gradient masking, optimizer step, re-masking): that is what gets compiled or captured, so the masking
is the engine's own and a method's per-step work (BiDST's scores, Deep-R's L1 and noise, Top-KAST's
penalty) runs inside it. A step on which the method decides (a topology update, RigL's dense-gradient
stash and skipped optimizer step) runs ``engine.step`` eagerly, around the compiled model. Update
steps are rare (every hundreds of steps), so they cost nothing measurable. A per-step hook that is not
capturable (a plugin that does not declare ``Needs.capturable_hook``) is named, with its reason, in
one log line, and then every step runs ``engine.step`` eagerly around the compiled model, as before.

* :class:`CompiledStepper`: ``torch.compile(model)`` (forward, and the backward through AOTAutograd)
  plus ``torch.compile`` of the captured step with the learning rate held in a tensor, so a schedule
  change is a ``fill_`` and not a recompilation. Dynamo's counters give the number of compiled graphs
  and graph breaks.
* :class:`CudaGraphStepper`: the whole step (forward, backward, the captured step with fused SGD and a
  device-tensor LR) captured once in a ``torch.cuda.CUDAGraph`` after a few eager warm-up steps on a
  side stream, then replayed with the batch (and the hook's host-drawn ``step_inputs``) copied into
  static inputs. No re-capture ever happens: updates write into the captured buffers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

from dstbench.core.errors import ConfigError
from dstbench.core.updater import hook_capture_problem
from dstbench.engine.captured import CapturedStep
from dstbench.train.epoch import autocast
from dstbench.train.setup import Training

__all__ = ["CompiledStepper", "CudaGraphRecorder", "CudaGraphStepper", "dynamo_counts"]
log = logging.getLogger(__name__)

# Eager steps before the CUDA graph is captured: lazily created state (momentum buffers, cuDNN
# algorithm choices, autocast caches) must exist before capture (PyTorch's CUDA-graph guidance).
GRAPH_WARMUP_STEPS = 3


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


class _FastStepper:
    """What both fast steppers share: a tensor learning rate, step counts and the summary report."""

    mode = ""

    def __init__(self, t: Training) -> None:
        self.t = t
        self.engine = t.engine
        self.optimizer = t.optimizer
        self.hook_problem = hook_capture_problem(t.engine.updater)
        self.eager_hooks = self.hook_problem is not None
        for group in t.optimizer.param_groups:
            # A tensor LR: the schedule writes into it, so neither compiled code nor a graph sees a new value.
            group["lr"] = torch.tensor(float(group["lr"]), device=t.device)
            if self.mode == "cuda_graph":
                # Fused SGD takes a device-tensor LR without a host sync, so it can be captured.
                group["fused"], group["foreach"] = True, False
        self._start = dynamo_counts()
        self._graphs_at_first_update: int | None = None
        self.fast_steps = 0
        self.eager_steps = 0
        self.captures = 0
        self.captured = CapturedStep(t.engine)  # after the LR became a tensor: its hook context holds it

    def _forward_backward(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        with autocast(t.cfg, t.device):
            logits = model(x)
            loss = t.criterion(logits.float(), y)
        (loss / t.cfg.grad_accum).backward()
        return loss, logits

    def _engine_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """A step on which the method may decide: the engine's own, eagerly."""
        self.engine.step(step, (x, y))
        self.eager_steps += 1

    def _plain_step_done(self) -> None:
        """A plain step ran outside ``engine.step``: its step counter moves as ``engine.step``'s would."""
        self.engine.previous_step_skipped = False
        self.fast_steps += 1

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


class CompiledStepper(_FastStepper):
    """``torch.compile`` of the model and of the engine's plain step; other steps run ``engine.step``."""

    mode = "compile"

    def __init__(self, t: Training) -> None:
        super().__init__(t)
        if self.hook_problem is not None:
            log.warning(
                "%s's per-step hook is not captured (%s): it runs eagerly around the compiled model%s",
                t.engine.updater.name,
                self.hook_problem,
                " (no CUDA graph)" if t.cfg.cuda_graph and t.device.type == "cuda" else "",
            )
        self._last_graphs = self._start["graphs"]
        self._records_seen = len(t.engine.records)
        self.forward_model = torch.compile(t.model)
        self._compiled_step: Callable[[], None] = torch.compile(self.captured.run)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, last_micro: bool) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = self._forward_backward(self.forward_model, x, y)
        if last_micro:
            # The first optimizer step runs eagerly: it creates the optimizer's lazily allocated state.
            if self.eager_steps > 0 and self.engine.is_capturable_step(step):
                self.fast_optimizer_step(step)
            else:
                self._engine_step(step, x, y)
            self.optimizer.zero_grad(set_to_none=True)
        return loss, logits

    def fast_optimizer_step(self, step: int) -> None:
        """The compiled captured step (its host-drawn inputs staged first)."""
        self._note_updates()
        self.captured.stage(step)
        self._compiled_step()
        self._plain_step_done()
        self._last_graphs = dynamo_counts()["graphs"]

    def _note_updates(self) -> None:
        """Remember the graph count at the first topology update that follows compiled steps."""
        if len(self.engine.records) != self._records_seen:
            self._records_seen = len(self.engine.records)
            if self._graphs_at_first_update is None and self._last_graphs > self._start["graphs"]:
                self._graphs_at_first_update = self._last_graphs


class CudaGraphStepper(_FastStepper):
    """The whole plain step from one captured CUDA graph; warm-up and decision steps run eagerly."""

    mode = "cuda_graph"
    device_types: tuple[str, ...] = ("cuda",)
    recorder: Callable[[torch.device], Any] = CudaGraphRecorder

    def __init__(self, t: Training) -> None:
        if t.cfg.grad_accum != 1:
            raise ConfigError("--compile with CUDA graphs needs --grad-accum 1 (or pass --no-cuda-graph)")
        super().__init__(t)
        self.model = t.model
        self._graph: Any = None
        self._static: dict[str, torch.Tensor] = {}
        self._side_stream = torch.cuda.Stream(device=t.device) if t.device.type == "cuda" else None

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, last_micro: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.engine.is_capturable_step(step) and self._ready(x, y, step):
            return self._replay(x, y, step)
        if self._graph is not None:
            # Replays leave their gradients in the captured tensors; an eager backward would add to them.
            self.optimizer.zero_grad(set_to_none=False)
        with self._eager_stream():
            loss, logits = self._forward_backward(self.model, x, y)
            if last_micro:
                self._engine_step(step, x, y)
                # After a capture, eager steps keep the captured gradient tensors (zeroed in place).
                self.optimizer.zero_grad(set_to_none=self._graph is None)
        return loss, logits

    def _ready(self, x: torch.Tensor, y: torch.Tensor, step: int) -> bool:
        """Whether this step replays the captured graph (captures it first when due)."""
        if self._graph is None:
            if self.eager_steps < GRAPH_WARMUP_STEPS or x.shape[0] != self.t.cfg.batch_size:
                return False  # capture a full batch: a short last batch of an epoch runs eagerly
            self.captured.stage(step)  # the hook's input buffers exist before the capture reads them
            self._capture(x, y)
        return tuple(x.shape) == tuple(self._static["x"].shape)

    @contextlib.contextmanager
    def _eager_stream(self) -> Iterator[None]:
        """Eager steps before capture run on a side stream, as CUDA-graph capture requires."""
        side = self._side_stream
        if self._graph is not None or side is None:
            yield
            return
        side.wait_stream(torch.cuda.current_stream(self.t.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.t.device).wait_stream(side)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # y as the batches bring it: class indices, or soft targets (N, classes) with --mixup/--cutmix.
        self._static = {"x": torch.zeros_like(x), "y": torch.zeros_like(y)}
        self.optimizer.zero_grad(set_to_none=True)  # grads are allocated from the graph's pool
        graph = self.recorder(self.t.device)
        graph.capture(self._whole_step)
        self._graph = graph
        self.captures += 1

    def _whole_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the graph holds: forward, backward, then the engine's captured step."""
        with self._graph_autocast():
            logits = self.model(self._static["x"])
            loss = self.t.criterion(logits.float(), self._static["y"])
        loss.backward()
        self.captured.run()
        return loss, logits

    def _graph_autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.t.cfg.amp and self.t.device.type == "cuda":
            # No autocast weight cache inside a graph (PyTorch's CUDA-graph + AMP guidance).
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def _replay(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One whole training step from the captured graph; returns (loss, logits) (static outputs)."""
        assert self._graph is not None
        self._static["x"].copy_(x)
        self._static["y"].copy_(y)
        self.captured.stage(step)
        loss, logits = self._graph.replay()
        self._plain_step_done()
        return loss, logits
