"""Method registry: built-ins register with a decorator, third-party packages through entry points.

Mirrors timm's model registry: a name maps to a factory, ``create_updater(name, **hp)`` builds one, and
listing is cheap. External packages declare::

    [project.entry-points."dstbench.methods"]
    my-method = "my_package.module:MyUpdater"

and appear in ``dstbench methods`` with no change to dstbench.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import Any, TypeVar

from dstbench.core import distributions
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import build_hyperparameters, check_hyperparameters
from dstbench.core.updater import MaskUpdater

__all__ = ["register_method", "get_method", "list_methods", "create_updater", "methods_with_policy", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "dstbench.methods"
_REGISTRY: dict[str, type[MaskUpdater]] = {}
_entry_points_loaded = False
log = logging.getLogger(__name__)

U = TypeVar("U", bound=type[MaskUpdater])


def register_method(name: str) -> Any:
    """Class decorator: ``@register_method("rigl")`` makes the class available by that name."""

    def decorate(cls: U) -> U:
        if not issubclass(cls, MaskUpdater):
            raise TypeError(f"{cls.__name__} must subclass MaskUpdater")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"method {name!r} is already registered by {existing.__module__}.{existing.__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins_and_plugins() -> None:
    global _entry_points_loaded
    # The built-ins are plugins like any other: found by name at run time, so the contract (core)
    # never depends on the methods that implement it.
    importlib.import_module("dstbench.methods")

    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            log.warning("could not load method plugin %s (%s): %s", entry.name, entry.value, exc)
            continue
        if entry.name not in _REGISTRY:
            register_method(entry.name)(cls)


def list_methods() -> list[str]:
    _load_builtins_and_plugins()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[MaskUpdater]:
    _load_builtins_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(_REGISTRY))}") from None


def create_updater(name: str, hyperparameters: dict[str, Any] | None = None) -> MaskUpdater:
    """Build method ``name`` with hyper-parameters given by name (strings are parsed by field type)."""
    cls = get_method(name)
    updater = cls(**build_hyperparameters(cls, hyperparameters or {}))
    # Again here, for plugins whose own ``__post_init__`` does not call the base class's.
    check_hyperparameters(updater)
    return updater


def methods_with_policy(*policies: str) -> list[str]:
    """Registered methods whose ``needs.density_policy`` (with default hyper-parameters) is one of
    ``policies``: lists of methods come from what each declares, never from a list kept by hand."""
    names = []
    for name in list_methods():
        try:
            policy = get_method(name)().needs.density_policy
        except Exception:  # a plugin that cannot be built with its defaults declares nothing here
            continue
        if policy in policies:
            names.append(name)
    return names


distributions.ranking_methods = lambda: methods_with_policy(*distributions.GLOBAL_POLICIES)
