"""Loading a ``.pt`` run file without running code: ``torch.load(weights_only=True)``.

A pickle can call any function while it is read, and run folders are shared (results, reproductions),
so reading one must never execute code. ``weights_only=True`` lets the unpickler build only tensors,
plain containers and numbers, plus the few types listed in :data:`ALLOWED` (what a dstbench checkpoint
stores besides those); anything else is refused *before* it is called, as one line naming the type.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dstbench.core.errors import CheckpointError

__all__ = ["ALLOWED", "load_state"]

ALLOWED: list[Any] = []
"""Types beyond tensors and plain containers that checkpoints hold (numpy scalars of method states)."""


def load_state(body: bytes, path: Path, map_location: str | torch.device = "cpu") -> Any:
    """The object saved in ``body`` (a verified ``.pt``), unpickled with only allow-listed types."""
    try:
        with torch.serialization.safe_globals(ALLOWED):
            return torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"Unsupported (?:operand|class) ([\w.]+)", str(exc))
        what = found[1] if found else str(exc).splitlines()[0][:120]
        raise CheckpointError(
            f"{path} holds a pickled object a run file never holds ({what}): refused without running it"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}") from None
