"""``--compile``: the compiled step computes what eager computes, keeps every engine invariant, and a
topology update (masks changed in place) never recompiles.

Stated tolerance: per-step training losses of the compiled run equal the eager run's to 1e-4
(relative) over the first 8 steps (inductor fuses and reorders float operations, so bitwise equality
is not expected), and the masks of the first topology update are identical. Compiling is slow on a
2-core CPU, so the suite holds two short compiled runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from dstbench.config import resolve_config
from dstbench.train.compiled import CudaGraphStepper
from dstbench.train.loop import train
from tests.compile_helpers import SMALL, EmulatedGraph, Recorder, masks_of, run_small


def test_compiled_rigl_matches_eager_and_never_recompiles_after_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hp = {"delta_t": 3}
    torch._dynamo.reset()  # graphs other tests compiled in this process would be reused, not counted
    with monkeypatch.context() as patch:
        eager = Recorder(patch)
        run_small(tmp_path / "eager", "rigl", False, hp)
    with monkeypatch.context() as patch:
        fast = Recorder(patch)
        summary = run_small(tmp_path / "compiled", "rigl", True, hp)

    steps = 16
    assert eager.checked == fast.checked == steps and not eager.violations and not fast.violations
    assert len(fast.losses) == len(eager.losses) == steps
    assert fast.losses[:8] == pytest.approx(eager.losses[:8], rel=1e-4)

    report = summary["compile"]
    assert report["mode"] == "compile" and not report["eager_hooks"]
    assert summary["topology_updates"] >= 4
    # Update steps (and the first, which creates the momentum buffers) run eagerly; the rest compiled.
    assert report["fast_steps"] + report["eager_steps"] == steps and report["fast_steps"] >= 8
    assert report["compiled_graphs"] >= 1
    assert report["recompilations_after_first_update"] == 0

    first_update = sorted((tmp_path / "eager" / "masks").glob("step_*.npz"))[0].name
    for name in ("init.npz", first_update):
        assert masks_of(tmp_path / "compiled" / "masks" / name) == masks_of(tmp_path / "eager" / "masks" / name)
    written = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    assert written["compile"] == report


def test_an_uncapturable_per_step_hook_runs_eagerly_and_is_named_once_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dstbench.train.compiled"):
        summary = run_small(tmp_path / "bidst", "bidst", True, {"update_frequency": 1, "second_pass": True})
    notes = [r.getMessage() for r in caplog.records if "per-step hook" in r.getMessage()]
    assert notes == [
        "bidst's per-step hook is not captured (second_pass=True evaluates the loss again on the step's batch): "
        "it runs eagerly around the compiled model"
    ]
    report = summary["compile"]
    assert report["eager_hooks"] and report["fast_steps"] == 0 and report["eager_steps"] == 16
    assert recorder.checked == 16 and not recorder.violations
    assert summary["topology_updates"] >= 1


def test_graph_mode_orchestration_matches_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-graph path's control flow, on the CPU: warm-up steps, one capture on a full batch,
    replays, eager update steps between replays writing into the captured buffers."""
    hp = {"delta_t": 3}
    with monkeypatch.context() as patch:
        eager = Recorder(patch)
        run_small(tmp_path / "eager", "rigl", False, hp)
    with monkeypatch.context() as patch:
        patch.setattr(CudaGraphStepper, "device_types", ("cuda", "cpu"))
        patch.setattr(CudaGraphStepper, "recorder", EmulatedGraph)
        patch.setattr(torch, "compile", lambda *a, **k: pytest.fail("graph mode must not call torch.compile"))
        graph = Recorder(patch)
        summary = run_small(tmp_path / "graph", "rigl", True, hp)
    report = summary["compile"]
    assert report["mode"] == "cuda_graph" and report["cuda_graph_captures"] == 1
    # 16 steps; RigL decides after steps 0, 4, 8, 12 (TF's clock pauses on mask steps; t_end 0.75).
    # Eager: warm-up steps 0-2 and the updates 4, 8, 12; replayed: the other 10, from step 3 on.
    assert report["eager_steps"] == 6 and report["fast_steps"] == 10
    assert not graph.violations and graph.checked == report["eager_steps"]
    assert graph.losses == pytest.approx(eager.losses, rel=1e-5)  # fused vs foreach SGD: rounding only
    for snap in sorted((tmp_path / "eager" / "masks").glob("*.npz")):
        assert masks_of(tmp_path / "graph" / "masks" / snap.name) == masks_of(snap), snap.name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_matches_eager_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hp = {"delta_t": 3}
    gpu = {"device": "cuda"}
    with monkeypatch.context() as patch:
        eager = Recorder(patch)
        cfg = resolve_config("quick", None, {**SMALL, **gpu, "method": "rigl", "out": str(tmp_path / "e")}, hp)
        train(cfg, progress=False)
    with monkeypatch.context() as patch:
        graph = Recorder(patch)
        cfg = resolve_config(
            "quick", None, {**SMALL, **gpu, "method": "rigl", "compile": True, "out": str(tmp_path / "g")}, hp
        )
        summary = train(cfg, progress=False)
    assert summary["compile"]["mode"] == "cuda_graph" and summary["compile"]["cuda_graph_captures"] == 1
    assert summary["compile"]["fast_steps"] > 0
    assert not eager.violations and not graph.violations
    # Replayed steps record their loss outside the criterion call; compare the eager warm-up steps.
    assert graph.losses[:3] == pytest.approx(eager.losses[:3], rel=1e-4)


def test_the_two_uninformative_compile_warnings_are_dropped_and_no_other() -> None:
    import logging

    from dstbench.train.torch_logs import quiet_compile_warnings

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    quiet_compile_warnings()
    quiet_compile_warnings()  # idempotent: one filter per logger
    ext, ctx = logging.getLogger("torch.utils.cpp_extension"), logging.getLogger("torch._dynamo.variables.ctx_manager")
    assert len(ext.filters) == len(ctx.filters) == 1
    keep = Keep()
    ext.addHandler(keep), ctx.addHandler(keep)
    try:
        ext.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        ctx.warning("Profiler record function %s will be ignored", "x")
        ext.warning("a real problem")
    finally:
        ext.removeHandler(keep), ctx.removeHandler(keep)
    assert keep.messages == ["a real problem"]
