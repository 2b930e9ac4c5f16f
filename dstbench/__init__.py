"""dstbench: benchmarking Dynamic Sparse Training behind one ``MaskUpdater`` interface.

The public names are imported on first use (PEP 562), so ``import dstbench`` is instant: the command
line installs its SIGINT/SIGTERM handlers before torch loads, and a Ctrl-C during start-up is one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .distributions import plan_sparsity
    from .engine import SparseEngine
    from .registry import create_updater, get_method, list_methods, register_method
    from .selection import topk_mask
    from .updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext

# The public names and the module each lives in. They are imported on first use (PEP 562) so that
# ``import dstbench.cli`` (and with it ``dstbench --help``) does not pay for importing torch.
_LAZY = {
    "MaskUpdater": "updater",
    "MaskedLayer": "updater",
    "Needs": "updater",
    "StepInfo": "updater",
    "UpdateContext": "updater",
    "SparseEngine": "engine",
    "plan_sparsity": "distributions",
    "register_method": "registry",
    "get_method": "registry",
    "list_methods": "registry",
    "create_updater": "registry",
    "topk_mask": "selection",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dstbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
