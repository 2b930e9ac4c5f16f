"""One run on N processes (``torchrun --nproc-per-node N -m dstbench train ...``) with provably equal masks.

DDP averages gradients during ``backward()``, before the engine or any method reads them, and every
mask decision is seeded by (run seed, step, purpose), so all ranks *should* choose the same masks.
"Should" is how other libraries shipped desynchronised masks, so this module checks it: at every
topology update (and for the initial masks) each rank hashes every mask and every entry of the
method's state (``updater.state_dict()``, e.g. BiDST's scores), and one all-reduce of the hashes
(MIN and MAX) tells whether they agree. A mismatch stops every rank at once with a one-line error
naming the first layer (or state entry) that differs; agreement is recorded per update in
``distributed.jsonl`` of the run folder.

The loop never asks whether it runs under torchrun: it asks its :class:`Platform` (one process) or
:class:`DistributedPlatform` (one rank) who writes, what is summed over ranks, and what the
checkpoint and the summary add.

Rules of a DDP run:

* each rank reads its contiguous piece of every global batch (``TensorLoader(shard=...)``), so
  ``--batch-size`` is the global batch and the schedule equals the single-process run's;
* BatchNorm normalises over each rank's piece of the batch (the usual DDP setting; PyTorch's
  SyncBatchNorm is CUDA-only), and running statistics are averaged across ranks at the end of each
  epoch, before evaluation and the checkpoint, so every rank holds the same model. A DDP run with N
  ranks therefore trains exactly like a single process with ``--grad-accum N`` on the same global
  batch (same losses, weights and masks; only the running statistics are averaged, not chained);
* only rank 0 writes the run folder (:class:`ReplicaRunDir` on the others); ``--resume`` makes
  every rank read the same checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dstbench.config import TrainConfig
from dstbench.core.errors import ConfigError, DstbenchError
from dstbench.core.updater import MaskUpdater
from dstbench.engine.sparse_engine import MaskCallback
from dstbench.engine.topology import TopologyRecord
from dstbench.runs.atomic import atomic_write_jsonl
from dstbench.runs.rundir import RunDir

__all__ = [
    "AGREEMENT_FILE",
    "DESYNC_ENV",
    "DistributedPlatform",
    "MaskAgreement",
    "MaskDesyncError",
    "Platform",
    "ReplicaRunDir",
    "platform_from_env",
    "resolve_device",
    "describe_device",
    "device_line",
]
log = logging.getLogger(__name__)

AGREEMENT_FILE = "distributed.jsonl"
DESYNC_ENV = "DSTBENCH_TEST_DESYNC_RANK"
"""Test hook: the rank named here flips one mask entry at the first topology update (must be caught)."""


class MaskDesyncError(DstbenchError):
    """Ranks hold different masks or method state: the run cannot continue meaningfully."""


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; a CUDA name needs CUDA."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu (or auto)")
    return torch.device(name)


def device_line(names: Sequence[str], threads: int) -> str:
    """``device: cpu (2 threads)``: printed once by ``train`` and once by a grid (not once per run)."""
    return "device: " + ", ".join(describe_device(resolve_device(name), threads) for name in names)


def describe_device(device: torch.device, threads: int) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``: what a run reports it trains on."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"


class Platform:
    """Where one run trains: a single process (this class) or one rank of a torchrun job
    (:class:`DistributedPlatform`). Every rank question of the loop (who writes the folder, what is
    summed over ranks, what goes into the checkpoint and the summary) is asked here, so the loop
    reads the same either way (the role of open_lth's ``Platform``, facebookresearch/open_lth,
    platforms/base.py)."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder and prints progress."""
        return self.rank == 0

    def check(self, cfg: TrainConfig, updater: MaskUpdater) -> None:
        """Refuse, in one line, what this platform cannot run."""

    def run_dir(self, out: str) -> RunDir:
        return RunDir(out)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls (the model itself on one process)."""
        return model

    def mask_callback(self, updater: MaskUpdater, run: RunDir) -> MaskCallback:
        """The engine's ``on_masks``: what happens with every new set of masks."""
        return run.save_masks

    def average_buffers(self, model: nn.Module) -> None:
        """Make every rank hold the same BatchNorm statistics (nothing to do on one process)."""

    def means(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> tuple[float, float]:
        """(mean loss, accuracy) from running sums, over every rank's share of the data."""
        return float(loss_sum) / max(count, 1), int(correct) / max(count, 1)

    def checkpoint_state(self) -> dict[str, Any]:
        """Entries this platform adds to the checkpoint."""
        return {}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Read back what :meth:`checkpoint_state` wrote."""

    def summary(self) -> dict[str, Any]:
        """Entries this platform adds to ``summary.json``."""
        return {}

    def shutdown(self) -> None:
        """Leave the process group (nothing to leave on one process)."""


class DistributedPlatform(Platform):
    """One rank of a torchrun job: only rank 0 writes; masks are checked for agreement at every change."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(device)
        self.rank = rank
        self.world_size = world_size
        self.agreement: MaskAgreement | None = None

    def check(self, cfg: TrainConfig, updater: MaskUpdater) -> None:
        if cfg.compile:
            raise ConfigError("--compile is not supported with torchrun (DDP) yet; drop one of them")
        if updater.needs.init_batch:
            raise ConfigError(f"{cfg.method} scores a batch before training, which DDP runs do not support yet")

    def run_dir(self, out: str) -> RunDir:
        return RunDir(out) if self.is_main else ReplicaRunDir(out)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the model: gradients are averaged inside ``backward()``. Buffers are not broadcast
        each step (each rank keeps its own BatchNorm statistics, averaged per epoch)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        ddp: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
        return ddp

    def mask_callback(self, updater: MaskUpdater, run: RunDir) -> MaskCallback:
        self.agreement = MaskAgreement(self, updater, run, run.save_masks)
        return self.agreement

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over ranks, in place."""
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.world_size)

    def means(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> tuple[float, float]:
        flat = torch.stack([v.detach().to(torch.float64) for v in (loss_sum, correct, torch.tensor(count, device=self.device))])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)  # one collective for the three sums
        total = int(flat[2])
        return float(flat[0]) / max(total, 1), int(flat[1]) / max(total, 1)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"distributed": self.agreement.state_dict()} if self.agreement is not None else {}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if self.agreement is not None:
            self.agreement.load_state_dict(state.get("distributed", []))

    def summary(self) -> dict[str, Any]:
        if self.agreement is None:
            return {}
        records = self.agreement.records
        return {
            "distributed": {
                "world_size": self.world_size,
                "backend": "nccl" if self.device.type == "cuda" else "gloo",
                "mask_checks": len(records),
                "all_agreed": all(r["agreed"] for r in records),
            }
        }

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def platform_from_env(device_name: str) -> Platform:
    """The platform torchrun describes (``WORLD_SIZE`` > 1: join its process group), else one process.

    CUDA ranks use NCCL on ``cuda:LOCAL_RANK``; CPU ranks use gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Platform(resolve_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if resolve_device(device_name).type == "cuda":  # one line if CUDA is named and absent
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedPlatform(rank, world, device)


def _digest(value: Any) -> int:
    """A 63-bit hash of a tensor (its bytes, dtype and shape) or of any other value's ``repr``."""
    h = hashlib.sha256()
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().contiguous()
        h.update(f"{array.dtype}{tuple(array.shape)}".encode())
        h.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"{key}:{_digest(value[key])};".encode())
    elif isinstance(value, (list, tuple)):
        for item in value:
            h.update(f"{_digest(item)};".encode())
    elif isinstance(value, np.ndarray):
        h.update(value.tobytes())
    else:
        h.update(repr(value).encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


class MaskAgreement:
    """The engine's ``on_masks`` callback in a DDP run: check agreement, record it, then pass on."""

    def __init__(self, platform: Platform, updater: MaskUpdater, run: RunDir, inner: MaskCallback | None) -> None:
        self.platform = platform
        self.updater = updater
        self.run = run
        self.inner = inner
        self.records: list[dict[str, Any]] = []
        desync = os.environ.get(DESYNC_ENV)
        self._desync_pending = desync is not None and int(desync) == platform.rank

    def __call__(self, step: int, epoch: int, masks: dict[str, torch.Tensor], record: TopologyRecord | None) -> None:
        if record is not None and self._desync_pending:
            self._desync_pending = False
            first = next(iter(masks.values()))
            first.view(-1)[0] = ~first.view(-1)[0]  # deliberately desynchronise this rank (test hook)
        names = [f"mask {name}" for name in masks]
        values: list[Any] = list(masks.values())
        for key, value in sorted(self.updater.state_dict().items()):
            names.append(f"{self.updater.name} state {key!r}")
            values.append(value)
        local = torch.tensor([_digest(v) for v in values], dtype=torch.int64)
        low, high = local.clone(), local.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        differ = (low != high).nonzero().flatten().tolist()
        combined = hashlib.sha256(local.numpy().tobytes()).hexdigest()[:16]
        self.records.append(
            {
                "step": step,
                "epoch": epoch,
                "world_size": self.platform.world_size,
                "masks_checked": len(masks),
                "state_entries_checked": len(values) - len(masks),
                "agreed": not differ,
                "digest": combined,
                **({"first_difference": names[differ[0]]} if differ else {}),
            }
        )
        if self.platform.is_main:
            atomic_write_jsonl(self.run.path / AGREEMENT_FILE, self.records)
        if differ:
            raise MaskDesyncError(
                f"ranks disagree at step {step}: {names[differ[0]]} differs across the {self.platform.world_size} ranks"
                + (f" (and {len(differ) - 1} more)" if len(differ) > 1 else "")
            )
        if self.inner is not None:
            self.inner(step, epoch, masks, record)

    def state_dict(self) -> list[dict[str, Any]]:
        return list(self.records)

    def load_state_dict(self, records: list[dict[str, Any]]) -> None:
        self.records = list(records)


class ReplicaRunDir(RunDir):
    """The run folder as seen by ranks other than 0: readable, never written."""

    def _skip(self, *args: Any, **kwargs: Any) -> None:
        return None

    write_config: Callable[..., None] = _skip  # type: ignore[assignment]
    write_plan: Callable[..., None] = _skip  # type: ignore[assignment]
    write_metrics: Callable[..., None] = _skip  # type: ignore[assignment]
    write_topology: Callable[..., None] = _skip  # type: ignore[assignment]
    write_summary: Callable[..., None] = _skip  # type: ignore[assignment]
    save_masks: Callable[..., None] = _skip  # type: ignore[assignment]
    save_checkpoint: Callable[..., None] = _skip  # type: ignore[assignment]
    save_rewind: Callable[..., None] = _skip  # type: ignore[assignment]
    start_manifest: Callable[..., None] = _skip  # type: ignore[assignment]
    keep_or_start_manifest: Callable[..., None] = _skip  # type: ignore[assignment]
    list_snapshots: Callable[..., None] = _skip  # type: ignore[assignment]
    remove: Callable[..., None] = _skip  # type: ignore[assignment]
