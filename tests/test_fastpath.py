"""The fast path by default on CUDA (issue 24): the decision of an unset ``--compile`` from the device,
its capability and the run's shape, tested with a faked device; an explicit choice is always obeyed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dstbench.cli.app import build_parser
from dstbench.config import resolve_config
from dstbench.core import fastpath
from dstbench.core.fastpath import CudaSupport, fast_path_decision

H100 = CudaSupport(available=True, capability=(9, 0), triton=True)


def _never(device: str) -> CudaSupport:
    raise AssertionError("the CPU decision must not ask about CUDA")


def test_the_cpu_default_stays_eager_and_asks_nothing() -> None:
    assert fast_path_decision("cpu", 1, True, 1, _never) == (False, None)


def test_a_capable_cuda_device_takes_the_fast_path() -> None:
    asked: list[str] = []

    def probe(device: str) -> CudaSupport:
        asked.append(device)
        return H100

    assert fast_path_decision("cuda:1", 1, True, 1, probe) == (True, None)
    assert asked == ["cuda:1"]


@pytest.mark.parametrize(
    ("support", "grad_accum", "cuda_graph", "world", "reason"),
    [
        (CudaSupport(available=False), 1, True, 1, "CUDA is not available"),
        (CudaSupport(True, (6, 1), True), 1, True, 1, "the GPU's compute capability 6.1 is below 7.0, the oldest torch.compile supports"),
        (CudaSupport(True, (8, 0), False), 1, True, 1, "Triton, which torch.compile needs on CUDA, is not installed"),
        (H100, 4, True, 1, "--grad-accum 4: a CUDA graph holds one micro-batch per step (--compile --no-cuda-graph compiles without one)"),
        (H100, 1, True, 2, "torchrun (DDP) runs do not support --compile yet"),
    ],
)
def test_each_reason_to_fall_back_to_eager(
    support: CudaSupport, grad_accum: int, cuda_graph: bool, world: int, reason: str
) -> None:
    assert fast_path_decision("cuda", grad_accum, cuda_graph, world, lambda device: support) == (False, reason)


def test_gradient_accumulation_without_a_cuda_graph_still_compiles() -> None:
    assert fast_path_decision("cuda", 4, False, 1, lambda device: H100) == (True, None)


def test_a_fallback_is_said_in_one_line_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastpath, "probe_cuda", lambda device: CudaSupport(available=False))
    monkeypatch.setattr(fastpath, "_SAID", set())
    with caplog.at_level(logging.WARNING, logger="dstbench.core.fastpath"):
        first = resolve_config("quick", None, {"device": "cuda"})
        second = resolve_config("quick", None, {"device": "cuda", "seed": 1})
    assert first.compile is False and second.compile is False
    assert [r.getMessage() for r in caplog.records] == [
        "cuda runs eagerly: CUDA is not available (--compile forces the fast path, --no-compile silences this)"
    ]


def test_unset_compile_on_a_capable_gpu_is_recorded_as_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "probe_cuda", lambda device: H100)
    cfg = resolve_config("quick", None, {"device": "cuda"})
    assert cfg.compile is True and cfg.to_json()["run"]["compile"] is True
    assert resolve_config("quick", None, {"device": "cpu"}).to_json()["run"]["compile"] is False


@given(device=st.sampled_from(["cpu", "cuda", "cuda:0"]), choice=st.booleans(), accum=st.sampled_from([1, 2]))
def test_an_explicit_choice_is_always_obeyed(device: str, choice: bool, accum: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fastpath, "probe_cuda", _never)
        cfg = resolve_config("quick", None, {"device": device, "compile": choice, "grad_accum": accum})
    assert cfg.compile is choice


def test_the_cli_keeps_compile_and_adds_no_compile(tmp_path: Path) -> None:
    parser = build_parser()
    for flags, wanted in (([], None), (["--compile"], True), (["--no-compile"], False)):
        args = parser.parse_args(["train", "--preset", "quick", "--out", str(tmp_path), *flags])
        assert args.compile is wanted
    assert json.loads(json.dumps(resolve_config("quick", None, {}).to_json()))["run"]["compile"] is False
