"""dstbench: benchmarking Dynamic Sparse Training behind one ``MaskUpdater`` interface.

The public names are imported on first use (PEP 562), so ``import dstbench`` is instant: the command
line installs its SIGINT/SIGTERM handlers before torch loads, and a Ctrl-C during start-up is one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _compat

__version__ = "0.1.0"

_compat.install()  # the 0.2 import paths (dstbench.updater, ...) still work, with a warning

if TYPE_CHECKING:
    from .core.distributions import plan_sparsity
    from .core.registry import create_updater, get_method, list_methods, register_method
    from .core.selection import topk_mask
    from .core.updater import MaskedLayer, MaskUpdater, Needs, StepInfo, UpdateContext
    from .engine.sparse_engine import SparseEngine

# The public names and the module each lives in. They are imported on first use (PEP 562) so that
# ``import dstbench.cli.app`` (and with it ``dstbench --help``) does not pay for importing torch.
_LAZY = {
    "MaskUpdater": "core.updater",
    "MaskedLayer": "core.updater",
    "Needs": "core.updater",
    "StepInfo": "core.updater",
    "UpdateContext": "core.updater",
    "SparseEngine": "engine.sparse_engine",
    "plan_sparsity": "core.distributions",
    "register_method": "core.registry",
    "get_method": "core.registry",
    "list_methods": "core.registry",
    "create_updater": "core.registry",
    "topk_mask": "core.selection",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dstbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
