"""Import paths of dstbench 0.1/0.2 that moved in 0.3, kept working with a deprecation warning.

Plugins written against the 0.2 docs import ``dstbench.updater``, ``dstbench.schedules``,
``dstbench.dropgrow`` and so on. Those modules now live in the layered packages (``dstbench.core`` for
everything a method uses). Rather than leave a shim file per old name in the package, one finder maps
each old name to the module that replaced it: ``import dstbench.updater`` returns the very module
``dstbench.core.updater`` (same classes, so ``isinstance`` and monkeypatching behave), after one
``DeprecationWarning`` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "dstbench.updater": "dstbench.core.updater",
    "dstbench.schedules": "dstbench.core.schedules",
    "dstbench.selection": "dstbench.core.selection",
    "dstbench.global_select": "dstbench.core.global_select",
    "dstbench.dropgrow": "dstbench.core.dropgrow",
    "dstbench.hparams": "dstbench.core.hparams",
    "dstbench.errors": "dstbench.core.errors",
    "dstbench.registry": "dstbench.core.registry",
    "dstbench.distributions": "dstbench.core.distributions",
    "dstbench.layers": "dstbench.core.layers",
    "dstbench.trainer": "dstbench.train.loop",
}
"""Old module -> its home since 0.3."""


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        warnings.warn(f"{name} is deprecated; import from {self.target}", DeprecationWarning, stacklevel=2)
        # The import system returns whatever sys.modules holds after exec_module: the real module.
        sys.modules[name] = importlib.import_module(self.target)


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Answers only for the names in :data:`MOVED`; every other import is not its business."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new))


def install() -> None:
    """Once per process (``import dstbench`` calls it)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
