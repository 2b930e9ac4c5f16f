"""Timing that can be compared: interleaved, warmed up, with the machine it ran on written beside it.

Each backend's time is taken in the same process as the ``masked`` baseline, alternating round by
round, so a load change on a shared machine hits all of them alike; the ratio is what to read. On the
CPU the timer is :class:`torch.utils.benchmark.Timer` with ``blocked_autorange``; on CUDA it is CUDA
events around a block of calls, after a warm-up, so launch queues are drained the same way for all.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

__all__ = ["time_interleaved", "provenance", "format_bytes", "cpu_model"]


def _cuda_seconds(fn: Callable[[], Any], min_run_time: float) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    calls = max(1, int(min_run_time / max(start.elapsed_time(end) / 1000, 1e-6)))
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / 1000 / calls


def _cpu_seconds(fn: Callable[[], Any], min_run_time: float, threads: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection are not the steady state
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, threads: int, rounds: int = 3, min_run_time: float = 0.2
) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin ``rounds`` times (median of rounds)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in fns.items():
                seconds = _cuda_seconds(fn, min_run_time) if device.type == "cuda" else _cpu_seconds(fn, min_run_time, threads)
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device, threads: int, dtype: torch.dtype) -> dict[str, Any]:
    """What a number needs beside it to mean anything: hardware, threads, load, dtype, library versions."""
    info: dict[str, Any] = {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": threads,
        "mkl": bool(torch.backends.mkl.is_available()),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = list(torch.cuda.get_device_capability(device))
    return info


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = [tensor.values(), tensor.crow_indices(), tensor.col_indices()]
        return sum(part.numel() * part.element_size() for part in parts)
    if tensor.layout != torch.strided:  # semi-structured and other subclasses: their packed payload
        return int(getattr(tensor, "packed", tensor).numel() * tensor.element_size())
    return tensor.numel() * tensor.element_size()


def format_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds: parameters, buffers and sparse weights kept as attributes."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        for value in [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]:
            if isinstance(value, torch.Tensor) and id(value) not in seen:
                seen.add(id(value))
                total += _tensor_bytes(value)
    return total
