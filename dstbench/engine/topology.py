"""Topology records and bit-packed mask snapshots: how a run's masks evolved, readable without the model.

Every topology update leaves a :class:`TopologyRecord` (step, epoch, wall time, grown/dropped per layer,
IoU with the previous mask) and, in the run directory, a snapshot of all masks packed 8 per byte.
The analysis code (Figure 4 IoU curves, ITOP rate) works from these files alone.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstbench.runs.atomic import atomic_write_bytes
from dstbench.runs.integrity import RunFileError, read_sealed_zip, seal, sha256

__all__ = [
    "LayerChange",
    "TopologyRecord",
    "mask_iou",
    "layer_change",
    "save_mask_snapshot",
    "load_mask_snapshot",
]


def mask_iou(before: torch.Tensor, after: torch.Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two boolean masks (1.0 when both are empty)."""
    union = int((before | after).sum())
    return 1.0 if union == 0 else int((before & after).sum()) / union


@dataclass(frozen=True)
class LayerChange:
    """How one layer's mask changed in one update."""

    active: int
    grown: int
    dropped: int
    intersection: int
    union: int

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def turnover(self) -> float:
        """Grown / active after the update: exploration, which pruning alone (grown = 0) never shows.

        IoU mixes the two: a mask that only shrinks by 20 % has IoU 0.8 and turnover 0."""
        return self.grown / self.active if self.active else 0.0


def layer_change(before: torch.Tensor, after: torch.Tensor) -> LayerChange:
    return LayerChange(
        active=int(after.sum()),
        grown=int((after & ~before).sum()),
        dropped=int((before & ~after).sum()),
        intersection=int((before & after).sum()),
        union=int((before | after).sum()),
    )


@dataclass
class TopologyRecord:
    """One topology update.

    ``step`` is the update's boundary: the training steps (batches) done before the new mask is first
    used, so 0 means "before training" and an update decided after step ``t`` has ``step = t + 1``.
    Under TF RigL's convention a mask step trains no weights, so it can exceed the optimizer steps.
    """

    step: int
    epoch: int
    seconds: float
    layers: dict[str, LayerChange] = field(default_factory=dict)

    @property
    def grown(self) -> int:
        return sum(c.grown for c in self.layers.values())

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.layers.values())

    @property
    def iou(self) -> float:
        """Global IoU: the masks concatenated (spec §9), not a mean of per-layer values."""
        union = sum(c.union for c in self.layers.values())
        return 1.0 if union == 0 else sum(c.intersection for c in self.layers.values()) / union

    @property
    def active(self) -> int:
        return sum(c.active for c in self.layers.values())

    @property
    def turnover(self) -> float:
        """Global turnover: grown / active over all sparsified layers after the update."""
        return self.grown / self.active if self.active else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "seconds": self.seconds,
            "iou": self.iou,
            "turnover": self.turnover,
            "grown": self.grown,
            "dropped": self.dropped,
            "active": self.active,
            "layers": {
                name: {**asdict(change), "iou": change.iou, "turnover": change.turnover}
                for name, change in self.layers.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopologyRecord:
        layers = {
            name: LayerChange(**{k: int(v) for k, v in change.items() if k not in ("iou", "turnover")})
            for name, change in data.get("layers", {}).items()
        }
        return cls(step=int(data["step"]), epoch=int(data["epoch"]), seconds=float(data["seconds"]), layers=layers)


def save_mask_snapshot(path: str | os.PathLike[str], masks: Mapping[str, torch.Tensor], **meta: Any) -> str:
    """Write ``masks`` (name -> bool tensor) packed 8 per byte into one sealed ``.npz``, atomically.

    Returns the SHA-256 in the seal (see :mod:`dstbench.runs.integrity`)."""
    arrays: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name, mask in masks.items():
        flat = mask.detach().to("cpu", torch.bool).reshape(-1).numpy()
        arrays[name] = np.packbits(flat)
        shapes[name] = list(mask.shape)
    arrays["__meta__"] = np.frombuffer(json.dumps({"shapes": shapes, **meta}).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    plain = buffer.getvalue()
    atomic_write_bytes(path, seal(plain))
    return sha256(plain)


def load_mask_snapshot(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Boolean numpy masks by layer name from a snapshot written by :func:`save_mask_snapshot`.

    The seal is verified first; any damage is a one-line :class:`~dstbench.runs.integrity.RunFileError`."""
    where = Path(path)
    body, _ = read_sealed_zip(where)
    try:
        with np.load(io.BytesIO(body)) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            masks = {}
            for name, shape in meta["shapes"].items():
                count = int(np.prod(shape))
                masks[name] = np.unpackbits(data[name], count=count).astype(bool).reshape(shape)
    except Exception as exc:  # numpy/zipfile raise many types (EOFError, BadZipFile, ValueError, KeyError)
        raise RunFileError(f"{where} is damaged: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return masks
