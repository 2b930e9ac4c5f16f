"""dstbench: benchmarking Dynamic Sparse Training behind one ``MaskUpdater`` interface.

The public names are imported on first use (PEP 562), so ``import dstbench`` is instant: the command
line installs its SIGINT/SIGTERM handlers before torch loads, and a Ctrl-C during start-up is one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "plan_sparsity": ".distributions",
    "SparseEngine": ".engine",
    "create_updater": ".registry",
    "get_method": ".registry",
    "list_methods": ".registry",
    "register_method": ".registry",
    "topk_mask": ".selection",
    "MaskedLayer": ".updater",
    "MaskUpdater": ".updater",
    "Needs": ".updater",
    "StepInfo": ".updater",
    "UpdateContext": ".updater",
}

if TYPE_CHECKING:
    from .distributions import plan_sparsity
    from .engine import SparseEngine
    from .registry import create_updater, get_method, list_methods, register_method
    from .selection import topk_mask
    from .updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dstbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
