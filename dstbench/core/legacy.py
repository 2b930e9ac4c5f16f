"""The 0.2 contract's single-method hooks, still honoured for plugins that override them.

dstbench 0.2 had a hook per special case (``initial_weights``, ``backward_masks``, ``update_steps``,
``layer_targets``, ``total_target``, ``after_step``, ``skips_optimizer_step``, ``gradient_densities``,
``bind``, ``schedule()`` as a method, a hand-written ``is_update_step``). Built-in methods use their
replacements (docs/plugins.md, "Migrating from 0.2"); a plugin that still defines an old hook keeps
working, and its class gets one :class:`DeprecationWarning` per old hook.

This module only asks the method object; it imports nothing else from the contract, so the base class
can use it without a cycle.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["REPLACEMENTS", "contract_default", "overrides", "legacy_hook", "warn_once"]

REPLACEMENTS: dict[str, str] = {
    "initial_weights": "return MaskUpdate(weights=...) from init_masks",
    "backward_masks": "return MaskUpdate(backward=...) from init_masks and update",
    "update_steps": "a schedule object with update_steps() (e.g. core.schedules.DoublingPeriodic)",
    "layer_targets": "targets() returning Targets(layers=...)",
    "total_target": "targets() returning Targets(total=...)",
    "after_step": "on_step with Needs(step_hook_at='after_optimizer')",
    "skips_optimizer_step": "Needs(skip_optimizer_on_update=True)",
    "gradient_densities": "Needs(gradient_density=...)",
    "bind": "setup(run: RunView)",
    "schedule": "a schedule object held as the attribute `schedule` (functools.cached_property)",
    "is_update_step": "a schedule object held as the attribute `schedule`",
}
"""Each 0.2 hook and what replaces it."""

_WARNED: set[tuple[type, str]] = set()
F = TypeVar("F", bound=Callable[..., Any])


def contract_default(func: F) -> F:
    """Marks a base-class hook, so :func:`overrides` can tell a plugin's own definition from it."""
    func.__dstbench_default__ = True  # type: ignore[attr-defined]
    return func


def overrides(method: object, hook: str) -> bool:
    """Whether ``method``'s class defines ``hook`` itself (not the base class's default, if any)."""
    found = getattr(type(method), hook, None)
    return found is not None and not getattr(found, "__dstbench_default__", False)


def warn_once(cls: type, hook: str) -> None:
    """One DeprecationWarning per (class, old hook)."""
    if (cls, hook) in _WARNED:
        return
    _WARNED.add((cls, hook))
    warnings.warn(
        f"{cls.__name__}.{hook} is the 0.2 contract; use {REPLACEMENTS[hook]} (docs/plugins.md, "
        "'Migrating from 0.2'). It still works, and will be removed in a future version.",
        DeprecationWarning,
        stacklevel=4,
    )


def legacy_hook(method: object, hook: str) -> Callable[..., Any] | None:
    """The plugin's own definition of an old hook, bound, with its one warning; None if it has none."""
    if not overrides(method, hook):
        return None
    warn_once(type(method), hook)
    bound: Callable[..., Any] = getattr(method, hook)
    return bound
