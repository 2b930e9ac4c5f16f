"""Whether a run takes the fast path (``--compile``) when the user did not say: on by default on a
CUDA device that can capture the step, off on the CPU.

On a GPU an eager step is launch-bound (He ResNet-32 at batch 64 on an H200: about 18 ms a step eager,
3.2 ms as one CUDA graph), so a newcomer's run should not pay 5x for a flag they never heard of. On
the CPU the compiled step gains little (README, "Speed") and compiling costs tens of seconds, so the
CPU default stays eager. An explicit ``--compile`` or ``--no-compile`` is always obeyed; the
resolved value is what ``config.json`` records, so a run says which path it took.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CudaSupport", "fast_path_decision", "probe_cuda", "resolve_compile"]
log = logging.getLogger(__name__)

MIN_CAPABILITY = (7, 0)
"""The oldest GPU architecture (Volta) whose kernels torch.compile's Triton backend generates."""


@dataclass(frozen=True)
class CudaSupport:
    """What this machine offers the fast path on a CUDA device."""

    available: bool
    capability: tuple[int, int] = (0, 0)
    triton: bool = False


def probe_cuda(device: str) -> CudaSupport:
    """Ask torch about ``device`` (imported here: building a config stays torch-free on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return CudaSupport(available=False)
    index = torch.device(device).index
    capability = torch.cuda.get_device_capability(index if index is not None else torch.cuda.current_device())
    from torch.utils._triton import has_triton

    return CudaSupport(available=True, capability=(int(capability[0]), int(capability[1])), triton=bool(has_triton()))


def fast_path_decision(
    device: str, grad_accum: int, cuda_graph: bool, world_size: int, probe: Callable[[str], CudaSupport]
) -> tuple[bool, str | None]:
    """(compile?, why not) for a run that did not choose; the reason is None when there is nothing to
    say (the CPU, whose default is eager, or a CUDA run that takes the fast path)."""
    if device == "auto":  # --device auto trains on CUDA where there is one
        device = "cuda" if probe("cuda").available else "cpu"
    if not device.startswith("cuda"):
        return False, None
    if world_size > 1:
        return False, "torchrun (DDP) runs do not support --compile yet"
    support = probe(device)
    if not support.available:
        return False, "CUDA is not available"
    if support.capability < MIN_CAPABILITY:
        major, minor = support.capability
        return False, f"the GPU's compute capability {major}.{minor} is below 7.0, the oldest torch.compile supports"
    if not support.triton:
        return False, "Triton, which torch.compile needs on CUDA, is not installed"
    if grad_accum > 1 and cuda_graph:
        return False, f"--grad-accum {grad_accum}: a CUDA graph holds one micro-batch per step (--compile --no-cuda-graph compiles without one)"
    return True, None


_SAID: set[str] = set()


def resolve_compile(device: str, grad_accum: int, cuda_graph: bool) -> bool:
    """The default of ``--compile``; a CUDA run that falls back to eager says why, once per process
    (a grid resolves many configs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    on, reason = fast_path_decision(device, grad_accum, cuda_graph, world_size, probe_cuda)
    if reason is not None and reason not in _SAID:
        _SAID.add(reason)
        log.warning("%s runs eagerly: %s (--compile forces the fast path, --no-compile silences this)", device, reason)
    return on
