"""Setting method hyper-parameters by name, from ``--hp name=value`` or a YAML mapping.

The dataclass field annotations are the schema: a value is parsed (strings) or checked (YAML scalars)
against its field's type, so ``--hp drop_fraction=abc`` or an unknown name fails with one clear line
instead of deep inside training. Ranges ride on the annotation too
(``delta_t: PositiveInt = 100``, ``zeta: Fraction = 0.3``, or ``Annotated[float, Range(gt=0)]``), and
every float must be finite, so ``--hp delta_t=0`` or ``--hp lam=inf`` is refused when the method is
built, before any data is read.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from dstbench.core.errors import ConfigError

__all__ = [
    "parse_hp_assignments",
    "build_hyperparameters",
    "coerce_value",
    "check_hyperparameters",
    "Range",
    "Fraction",
    "PositiveInt",
    "NonNegativeInt",
    "Positive",
    "NonNegative",
]


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric hyper-parameter, carried in its annotation: ``Annotated[float, Range(ge=0)]``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """``in [0, 1)`` for two-sided ranges, ``>= 1`` or ``> 0`` for one-sided ones."""
        low = (f"[{_show(self.ge)}", f">= {_show(self.ge)}") if self.ge is not None else None
        low = low or ((f"({_show(self.gt)}", f"> {_show(self.gt)}") if self.gt is not None else None)
        high = (f"{_show(self.le)}]", f"<= {_show(self.le)}") if self.le is not None else None
        high = high or ((f"{_show(self.lt)})", f"< {_show(self.lt)}") if self.lt is not None else None)
        if low and high:
            return f"in {low[0]}, {high[0]}"
        return (low or high or ("", "any number"))[1]


def _show(bound: float) -> str:
    """A bound as written: whole numbers in full (a seed's 4294967295, not 4.29497e+09), others short."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


Fraction = Annotated[float, Range(ge=0.0, le=1.0)]
"""A fraction in [0, 1] (drop fractions, SET's zeta, ends of training)."""
PositiveInt = Annotated[int, Range(ge=1)]
"""A count or period of at least 1 (ΔT, update frequencies)."""
NonNegativeInt = Annotated[int, Range(ge=0)]
Positive = Annotated[float, Range(gt=0.0)]
"""A strictly positive real (BiDST's lambda, temperatures)."""
NonNegative = Annotated[float, Range(ge=0.0)]
"""A real >= 0 (noise scales, penalty weights)."""


def _split_annotated(annotation: Any) -> tuple[Any, list[Range]]:
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        return base, [extra for extra in extras if isinstance(extra, Range)]
    return annotation, []


def _check_value(owner: str, name: str, value: Any, annotation: Any) -> None:
    """Finite floats, values inside any declared Range; recurses into tuples, lists and unions."""
    base, ranges = _split_annotated(annotation)
    origin = get_origin(base)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(base) if a is not type(None)]
        if value is not None and len(options) == 1:
            _check_value(owner, name, value, options[0])
    elif origin in (tuple, list) and isinstance(value, (tuple, list)):
        item_type = (get_args(base) or (Any,))[0]
        for item in value:
            _check_value(owner, name, item, item_type)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{owner}: {name} must be a finite number, got {value}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for bound in ranges:
            if not bound.contains(value):
                raise ConfigError(f"{owner}: {name} must be {bound.describe()}, got {value:g}")


def field_annotations(cls: type) -> dict[str, Any]:
    """The dataclass's field annotations with ``Annotated`` extras (ranges) kept."""
    return typing.get_type_hints(cls, include_extras=True)


def check_hyperparameters(updater: Any) -> None:
    """Every field of a method against its annotation, then the method's own cross-field rules."""
    hints = field_annotations(type(updater))
    owner = getattr(updater, "name", "") or type(updater).__name__
    for f in dataclasses.fields(updater):
        _check_value(owner, f.name, getattr(updater, f.name), hints.get(f.name, Any))
    validate = getattr(updater, "validate", None)
    if callable(validate):
        validate()


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
    annotation, _ranges = _split_annotated(annotation)
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
    hints = field_annotations(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            f"unknown hyper-parameter {unknown[0]!r} for method {getattr(cls, 'name', cls.__name__)!r}; valid: {valid}"
        )
    return {name: coerce_value(value, hints[name], name) for name, value in values.items()}
