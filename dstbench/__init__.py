"""dstbench: benchmarking Dynamic Sparse Training behind one ``MaskUpdater`` interface."""

from __future__ import annotations

__version__ = "0.1.0"

from .distributions import plan_sparsity
from .engine import SparseEngine
from .registry import create_updater, get_method, list_methods, register_method
from .selection import topk_mask
from .updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext

__all__ = [
    "__version__",
    "MaskUpdater",
    "MaskedLayer",
    "Needs",
    "StepInfo",
    "UpdateContext",
    "SparseEngine",
    "plan_sparsity",
    "register_method",
    "get_method",
    "list_methods",
    "create_updater",
    "topk_mask",
]
