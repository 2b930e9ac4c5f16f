"""Training budgets: RigL's longer schedules (``--budget 2x|5x``, Evci et al. 2020, Table 2 and Figure 2).

A budget of ``Nx`` trains N times as long *and* stretches every schedule by N, so the run is the 1x
run slowed down: ``--epochs`` and ``--warmup-epochs`` are multiplied (the per-step cosine learning rate
follows the longer run by itself), and so is every cadence a method declares
(:attr:`~dstbench.core.updater.MaskUpdater.cadence_fields`: RigL's ``delta_t``, SET's and MEST's
``update_frequency``, DSR's ``period``, ...), plugins included. Fractions of training (``t_end``,
``update_end_frac``, ...) stay fractions, so they stretch too. A 2x RigL run therefore makes as many
mask updates as the 1x run, twice as far apart. Per-step rules that are not cadences (Deep R's
``rewire_every = 1``: it rewires after every step by definition) are left as they are.

The budget is resolved once, into the config: ``config.json`` holds the longer epochs and the scaled
cadences beside ``budget``, so everything downstream (training, FLOPs, resume, reuse) reads the run as
it really was, and the report names it ``rigl (2x)``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["Budget", "BUDGETS", "budget_factor", "scaled_cadences", "budget_defaults", "describe_budget", "stretch"]

Budget = Literal["1x", "2x", "5x"]
"""The budgets RigL reports (1x is the ordinary run)."""

BUDGETS: dict[str, int] = {name: int(name[:-1]) for name in typing.get_args(Budget)}
"""Each budget's multiplier, read off its name."""


def budget_factor(budget: str) -> int:
    """The multiplier of ``budget`` ("2x" -> 2); an unknown name is refused by the config's type first."""
    return BUDGETS[budget]


def _defaults(cls: type) -> dict[str, Any]:
    """The fields' defaults (a factory's value too); required fields are left out."""
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def scaled_cadences(cls: type, hp: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """``hp`` with each of ``cls``'s cadence fields (given or at its default) multiplied by the budget."""
    factor = budget_factor(budget)
    if factor == 1:
        return dict(hp)
    defaults = _defaults(cls)
    cadences: Mapping[str, str] = getattr(cls, "cadence_fields", {})
    scaled = dict(hp)
    for name in cadences:
        value = hp.get(name, defaults.get(name))
        if isinstance(value, int) and not isinstance(value, bool):
            scaled[name] = value * factor
    return scaled


def budget_defaults(cls: type, budget: str) -> dict[str, Any]:
    """``cls``'s defaults as a run of this budget holds them (its cadences scaled): what a report
    compares a run's hyper-parameters with, so ``rigl`` at 2x with ``delta_t=200`` is plain ``rigl (2x)``."""
    return {**_defaults(cls), **scaled_cadences(cls, {}, budget)}


def describe_budget(cls: type) -> str:
    """What ``--budget`` scales for ``cls`` (``dstbench methods --details``)."""
    cadences: Mapping[str, str] = getattr(cls, "cadence_fields", {})
    scaled = ", ".join(f"{name} ({unit})" for name, unit in cadences.items()) or "no cadence of its own"
    return f"--budget {'|'.join(b for b in BUDGETS if b != '1x')} multiplies --epochs, --warmup-epochs and: {scaled}"


def stretch(
    budget: str, method: str, epochs: int, warmup_epochs: float, hp: Mapping[str, Any], max_epochs: int
) -> tuple[int, float, dict[str, Any]]:
    """A resolved run's epochs, warm-up and (typed) hyper-parameters under ``budget``, all multiplied;
    called once, by :func:`dstbench.config.resolve_config`."""
    from dstbench.core.errors import ConfigError
    from dstbench.core.registry import get_method

    factor = budget_factor(budget)
    if factor == 1:
        return epochs, warmup_epochs, dict(hp)
    if epochs * factor > max_epochs:
        raise ConfigError(f"--budget {budget} makes {epochs * factor} epochs, more than {max_epochs}")
    return epochs * factor, warmup_epochs * factor, scaled_cadences(get_method(method), hp, budget)
