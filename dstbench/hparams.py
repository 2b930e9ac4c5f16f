"""Setting method hyper-parameters by name, from ``--hp name=value`` or a YAML mapping.

The dataclass field annotations are the schema: a value is parsed (strings) or checked (YAML scalars)
against its field's type, so ``--hp drop_fraction=abc`` or an unknown name fails with one clear line
instead of deep inside training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ConfigError

__all__ = ["parse_hp_assignments", "build_hyperparameters", "coerce_value"]


def parse_hp_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; malformed items are a ConfigError."""
    parsed: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--hp expects name=value, got {item!r}")
        parsed[name.strip()] = value.strip()
    return parsed


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_value(value: Any, annotation: Any, name: str) -> Any:
    """Convert ``value`` to ``annotation`` (str input parsed, other input type-checked)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"}):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"hyper-parameter {name}: invalid value {value!r}")
    if origin is Literal:
        choices = get_args(annotation)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(
            f"hyper-parameter {name}: {value!r} is not one of {', '.join(map(str, choices))}"
        )
    if origin in (tuple, list):
        (item_type, *_rest) = get_args(annotation) or (str,)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"hyper-parameter {name}: expected a list, got {value!r}")
        converted = [coerce_value(item.strip() if isinstance(item, str) else item, item_type, name) for item in items]
        return tuple(converted) if origin is tuple else converted
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"hyper-parameter {name}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"hyper-parameter {name}: expected {annotation.__name__}, got {value!r}")
        try:
            if annotation is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value) if not isinstance(value, str) else int(value, 10)
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"hyper-parameter {name}: expected {annotation.__name__}, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"hyper-parameter {name}: expected a string, got {value!r}")
        return value
    return value


def build_hyperparameters(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Validate ``values`` against the dataclass ``cls``'s fields and return typed keyword arguments."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            f"unknown hyper-parameter {unknown[0]!r} for method {getattr(cls, 'name', cls.__name__)!r}; valid: {valid}"
        )
    return {name: coerce_value(value, hints[name], name) for name, value in values.items()}
