"""What a run costs in wall time: its steady-state epoch, the shares of it in updates and per-step hooks.

FLOPs say what a method should cost; the epoch's wall time says what a user pays on the device at
hand, including what FLOPs do not see (a per-step hook that keeps a step out of a CUDA graph, host
synchronisation, kernel launches). The first epoch also pays for warm-up (``torch.compile``, CUDA-graph
capture, allocator and cache growth), so the steady state is the **median of the training wall times
of epochs 2..E** (evaluation excluded, as in ``metrics.jsonl``'s ``epoch_seconds``); a one-epoch run has
no steady state and records its only epoch, marked ``warm_up_included``. The median rather than the
mean: one epoch slowed by a neighbour on a shared machine does not move it.

The shares are of the same epochs' summed training time: ``update_share`` in topology updates and
``step_hook_share`` inside the method's per-step hooks. The hook share is the time *inside* the hooks
only: what a hook costs elsewhere (a step that cannot be captured, a dense gradient) shows in the epoch
time, which is why tables put the epoch time relative to ``static`` and ``dense`` beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["device_name", "wall_time", "STEADY_DEFINITION"]

STEADY_DEFINITION = "median training wall time of epochs 2..E (evaluation excluded)"


def device_name(device: torch.device, threads: int) -> str:
    """``cpu, 4 threads`` or the GPU's name (``NVIDIA H200``): what an epoch time was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}, {threads} thread{'s' if threads != 1 else ''}"


def wall_time(metrics: Sequence[Mapping[str, Any]], device: str) -> dict[str, Any]:
    """The ``wall_time`` entry of ``summary.json`` from the run's ``metrics.jsonl`` rows."""
    rows = list(metrics[1:]) or list(metrics[:1])
    seconds = [float(row["epoch_seconds"]) for row in rows]
    total = sum(seconds)

    def share(key: str) -> float | None:
        return sum(float(row.get(key, 0.0)) for row in rows) / total if total > 0 else None

    return {
        "epoch_seconds": statistics.median(seconds) if seconds else None,
        "definition": STEADY_DEFINITION,
        "epochs_measured": len(rows),
        "warm_up_included": len(metrics) == 1,
        "update_share": share("update_seconds"),
        "step_hook_share": share("step_hook_seconds"),
        "device": device,
    }
