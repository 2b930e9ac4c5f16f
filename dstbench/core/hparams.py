"""Ranges and types of every setting: method hyper-parameters, config fields and CLI options.

The dataclass field annotations are the schema: a value is parsed (strings) or checked (YAML scalars)
against its field's type, so ``--hp drop_fraction=abc`` or an unknown name fails with one clear line
instead of deep inside training. Ranges ride on the annotation too
(``delta_t: PositiveInt = 100``, ``zeta: Fraction = 0.3``, or ``Annotated[float, Range(gt=0)]``), and
every float must be finite, so ``--hp delta_t=0`` or ``--hp lam=inf`` is refused when the method is
built, before any data is read. :class:`Range` and :func:`check_value` are the one vocabulary and the
one checker: ``TrainConfig``'s fields carry the same aliases, and the CLI's argparse types
(:mod:`dstbench.core.validation`) are built from them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from dstbench.core.errors import ConfigError

__all__ = [
    "parse_hp_assignments",
    "build_hyperparameters",
    "coerce_value",
    "check_hyperparameters",
    "check_value",
    "check_fields",
    "describe_range",
    "field_annotations",
    "Range",
    "Fraction",
    "PositiveInt",
    "NonNegativeInt",
    "Positive",
    "NonNegative",
    "Sparsity",
    "Momentum",
    "Seed",
    "MAX_SEED",
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
Sparsity = Annotated[float, Range(ge=0.0, lt=1.0)]
"""A target sparsity: 0 is dense, 1 would leave no weight (RigL's count k = n - floor(s*n) needs s < 1)."""
Momentum = Annotated[float, Range(ge=0.0, lt=1.0)]
"""An SGD momentum: 1 would never forget a gradient."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit, the range every RNG in the stack (numpy, torch, Python) accepts as is."""
Seed = Annotated[int, Range(ge=0, le=MAX_SEED)]
"""A seed of every RNG in the stack."""


def _split_annotated(annotation: Any) -> tuple[Any, list[Range]]:
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        return base, [extra for extra in extras if isinstance(extra, Range)]
    return annotation, []


def describe_range(kind: type, bounds: Range) -> str:
    """What a number of ``kind`` within ``bounds`` is, as an error line says it: ``in [0, 1)``,
    ``>= 1`` (an int), ``finite and >= 0`` (a float, which must also be finite)."""
    if bounds == Range():
        return "an integer" if kind is int else "finite"
    text = bounds.describe()
    return text if text.startswith("in ") or kind is int else f"finite and {text}"


def check_value(label: str, value: Any, annotation: Any) -> Any:
    """The one range check, for config fields, CLI options and method hyper-parameters alike.

    ``value`` (already of its type) must be a finite number inside every :class:`Range` its annotation
    carries, or one of a ``Literal``'s choices; Optional, tuple and list annotations are checked item
    by item, and None (unset) passes. Returns ``value``; anything else is a one-line ConfigError
    ``"{label} must be ..., got ..."``.
    """
    base, ranges = _split_annotated(annotation)
    origin = get_origin(base)
    if value is None:
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(base) if a is not type(None)]
        if len(options) == 1:
            check_value(label, value, options[0])
    elif origin in (tuple, list) and isinstance(value, (tuple, list)):
        item_type = (get_args(base) or (Any,))[0]
        for item in value:
            check_value(label, item, item_type)
    elif origin is Literal and value not in get_args(base):
        raise ConfigError(f"{label} must be one of {', '.join(map(str, get_args(base)))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kind = int if base is int or (base is not float and isinstance(value, int)) else float
        finite = not isinstance(value, float) or math.isfinite(value)
        for bound in ranges or ([Range()] if not finite else []):
            if not finite or not bound.contains(value):
                raise ConfigError(f"{label} must be {describe_range(kind, bound)}, got {value!r}")
    return value


def field_annotations(cls: type) -> dict[str, Any]:
    """The dataclass's field annotations with ``Annotated`` extras (ranges) kept."""
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(obj: Any, label: Callable[[str], str]) -> None:
    """Every field of the dataclass ``obj`` against its annotation, named in errors by ``label(name)``."""
    hints = field_annotations(type(obj))
    for f in dataclasses.fields(obj):
        check_value(label(f.name), getattr(obj, f.name), hints.get(f.name, Any))


def check_hyperparameters(updater: Any) -> None:
    """Every field of a method against its annotation, then the method's own cross-field rules."""
    owner = getattr(updater, "name", "") or type(updater).__name__
    check_fields(updater, lambda name: f"{owner}: {name}")
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
        for choice in choices:  # then regardless of case: --distribution ERK is erk
            if isinstance(value, str) and str(choice).casefold() == value.casefold():
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
