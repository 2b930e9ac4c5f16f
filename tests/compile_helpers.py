"""What the compile tests share: a small quick-preset run, and the per-step losses and engine
invariants of a run, observed from outside the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.train.compiled import CompiledStepper
from dstbench.train.loop import train

SMALL = {"epochs": 2, "batch_size": 32, "synthetic_train_samples": 256, "synthetic_test_samples": 64}


class Recorder:
    """Per-step training losses and engine invariants, observed from outside the trainer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.losses: list[float] = []
        self.violations: list[str] = []
        self.checked = 0
        recorder = self

        class RecordingLoss(nn.CrossEntropyLoss):
            def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                loss = super().forward(input, target)
                if not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
                    recorder.losses.append(float(loss.detach()))  # no host sync inside a CUDA graph
                return loss

        monkeypatch.setattr(torch.nn, "CrossEntropyLoss", RecordingLoss)
        engine_step = SparseEngine.step
        fast_step = CompiledStepper.fast_optimizer_step

        def checked_eager(engine: SparseEngine, step: int, batch: Any = None) -> None:
            engine_step(engine, step, batch)
            recorder.check(engine)

        def checked_fast(stepper: CompiledStepper, step: int) -> None:
            fast_step(stepper, step)
            recorder.check(stepper.engine)

        monkeypatch.setattr(SparseEngine, "step", checked_eager)
        monkeypatch.setattr(CompiledStepper, "fast_optimizer_step", checked_fast)

    def check(self, engine: SparseEngine) -> None:
        self.checked += 1
        self.violations += engine.violations()


def run_small(tmp: Path, method: str, compile: bool, hp: dict[str, Any]) -> dict[str, Any]:
    cfg = resolve_config("quick", None, {**SMALL, "method": method, "compile": compile, "out": str(tmp)}, hp)
    return train(cfg, progress=False)


def masks_of(path: Path) -> dict[str, bytes]:
    with np.load(path) as data:
        return {k: data[k].tobytes() for k in data.files}


class EmulatedGraph:
    """A CPU stand-in for ``CudaGraphRecorder`` with a CUDA graph's semantics: capturing runs nothing,
    and each replay runs the captured step with its gradients written afresh (a captured backward
    assigns the gradient buffers; it never adds to what an eager step left there)."""

    def __init__(self, device: torch.device) -> None:
        self.fn: Any = None

    def capture(self, fn: Any) -> None:
        self.fn = fn

    def replay(self) -> Any:
        self.fn.__self__.optimizer.zero_grad(set_to_none=False)
        return self.fn()
