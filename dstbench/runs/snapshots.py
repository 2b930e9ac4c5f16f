"""Bit-packed mask snapshots: a run's masks at every topology update, readable without the model.

One sealed ``.npz`` per update, masks packed 8 per byte, so the analysis code (Figure 4 IoU curves,
ITOP rate) works from the run folder alone.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstbench.runs.atomic import atomic_write_bytes
from dstbench.runs.integrity import Manifest, RunFileError, RunIdentity, check_member, read_sealed_zip, seal, unseal

__all__ = ["save_mask_snapshot", "load_mask_snapshot"]


def save_mask_snapshot(
    path: str | os.PathLike[str], masks: Mapping[str, torch.Tensor], identity: RunIdentity | None = None, **meta: Any
) -> str:
    """Write ``masks`` (name -> bool tensor) packed 8 per byte into one ``.npz`` sealed with the run's
    ``identity``, atomically. Returns the seal's digest (what the manifest lists)."""
    arrays: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name, mask in masks.items():
        flat = mask.detach().to("cpu", torch.bool).reshape(-1).numpy()
        arrays[name] = np.packbits(flat)
        shapes[name] = list(mask.shape)
    arrays["__meta__"] = np.frombuffer(json.dumps({"shapes": shapes, **meta}).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    sealed = seal(buffer.getvalue(), identity)
    atomic_write_bytes(path, sealed)
    return unseal(sealed, Path(path)).digest


def load_mask_snapshot(
    path: str | os.PathLike[str], manifest: Manifest | None | str = "folder", identity: RunIdentity | None = None
) -> dict[str, np.ndarray]:
    """Boolean numpy masks by layer name from a snapshot written by :func:`save_mask_snapshot`.

    The seal is verified first, then that the snapshot belongs to its run folder: ``manifest`` is the
    folder's manifest (``"folder"``: read it from the folder the snapshot lies in), ``identity`` the run
    it must belong to when the manifest is being repaired. Any damage, or a snapshot of another run,
    is a one-line :class:`~dstbench.runs.integrity.RunFileError`."""
    where = Path(path)
    root = where.parent.parent if where.parent.name == "masks" else where.parent
    if isinstance(manifest, str):
        manifest = Manifest.load(root)
    found = read_sealed_zip(where, root)
    check_member(where, found, manifest, identity)
    try:
        with np.load(io.BytesIO(found.body), allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            masks = {}
            for name, shape in meta["shapes"].items():
                count = int(np.prod(shape))
                masks[name] = np.unpackbits(data[name], count=count).astype(bool).reshape(shape)
    except Exception as exc:  # numpy/zipfile raise many types (EOFError, BadZipFile, ValueError, KeyError)
        raise RunFileError(f"{where} is damaged: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return masks
