"""A run directory: everything a run leaves behind, in files that analysis reads without the model.

Layout::

    config.json        resolved TrainConfig
    plan.json          per-layer targets (shape, target count, sparsified or dense)
    metrics.jsonl      one line per epoch
    topology.jsonl     one line per topology update (step, epoch, seconds, IoU, grown/dropped per layer)
    masks/init.npz     bit-packed masks before training; masks/step_XXXXXXXX.npz after each update
    checkpoint.pt      model, optimizer, engine and method state after the last finished epoch
    rewind.pt          the model after ``--save-rewind-step`` steps, for lottery-ticket rewinding (optional)
    summary.json       final numbers (written once the run is complete)

Every file is written atomically, and the jsonl files are rewritten whole from state that is also in
the checkpoint, so a resumed run leaves exactly the files an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_torch_save, atomic_write_json, atomic_write_jsonl
from .distributions import SparsityPlan
from .errors import CheckpointError, DstbenchError
from .topology import TopologyRecord, save_mask_snapshot

__all__ = ["RunDir"]


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    plan = property(lambda self: self.path / "plan.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    topology = property(lambda self: self.path / "topology.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    masks_dir = property(lambda self: self.path / "masks")
    rewind = property(lambda self: self.path / "rewind.pt")

    def is_complete(self) -> bool:
        return self.summary.exists()

    # -- writing -----------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)

    def write_plan(self, plan: SparsityPlan) -> None:
        atomic_write_json(
            self.plan,
            {
                "sparsity": plan.sparsity,
                "distribution": plan.distribution,
                "dense_layers": plan.dense_layers,
                "layers": [
                    {
                        "name": t.name,
                        "shape": list(t.layer.shape),
                        "kind": t.layer.kind,
                        "numel": t.numel,
                        "density": t.density,
                        "target_active": t.active,
                        "sparsified": t.sparsified,
                    }
                    for t in plan.targets
                ],
            },
        )

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_jsonl(self.metrics, rows)

    def write_topology(self, records: list[TopologyRecord]) -> None:
        atomic_write_jsonl(self.topology, [r.to_json() for r in records])

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)

    def save_masks(self, step: int, epoch: int, masks: dict[str, torch.Tensor], record: object) -> None:
        name = "init.npz" if record is None else f"step_{step:08d}.npz"
        save_mask_snapshot(self.masks_dir / name, masks, step=step, epoch=epoch)

    def save_rewind(self, step: int, model: dict[str, torch.Tensor]) -> None:
        """The weights a lottery ticket rewinds to (``dstbench.tickets``): the model after ``step`` steps."""
        atomic_torch_save(self.rewind, {"step": step, "model": {k: v.detach().cpu().clone() for k, v in model.items()}})

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(self.checkpoint, state)

    # -- reading -----------------------------------------------------------------------------------
    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        if not self.checkpoint.exists():
            raise CheckpointError(f"no checkpoint to resume in {self.path} (expected {self.checkpoint.name})")
        try:
            state = torch.load(self.checkpoint, map_location=map_location, weights_only=False)
        except Exception as exc:  # torch raises many types for truncated or foreign files
            raise CheckpointError(f"cannot read checkpoint {self.checkpoint}: {type(exc).__name__}") from None
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise CheckpointError(f"{self.checkpoint} is not a dstbench checkpoint")
        return state

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise DstbenchError(f"{self.path} is not a dstbench run directory (no {path.name})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DstbenchError(f"cannot read {path}: {exc}") from None

    def read_jsonl(self, path: Path) -> list[Any]:
        if not path.exists():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError) as exc:
            raise DstbenchError(f"cannot read {path}: {exc}") from None
