"""argparse types for numeric options, built from the range aliases of :mod:`dstbench.core.hparams`.

A :class:`Rule` is an argparse ``type=`` (``type=POSITIVE_INT``, for subcommand options) that parses
and then checks through :func:`~dstbench.core.hparams.check_value`, the checker config fields and
method hyper-parameters use, so an option, a config field and a hyper-parameter with the same alias
accept exactly the same numbers. ``tests/test_bad_input.py`` fails
when a numeric option has no rule or no rejection case.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import (
    MAX_SEED,
    Fraction,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Range,
    Seed,
    Sparsity,
    check_value,
    describe_range,
)

__all__ = [
    "Rule",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "SEED",
    "SPARSITY",
    "FRACTION",
    "POSITIVE_FLOAT",
    "MAX_SEED",
]


@dataclass(frozen=True)
class Rule:
    """A finite number of ``kind`` within ``bounds``: an ``Annotated[kind, Range(...)]`` alias, usable
    as an argparse type."""

    kind: type
    bounds: Range = Range()

    @classmethod
    def of(cls, annotation: Any) -> Rule:
        """The rule of a range alias such as ``hparams.PositiveInt``."""
        if get_origin(annotation) is not Annotated:
            return cls(annotation)
        base, *extras = get_args(annotation)
        return cls(base, next((extra for extra in extras if isinstance(extra, Range)), Range()))

    @property
    def annotation(self) -> Any:
        return Annotated[self.kind, self.bounds]

    @property
    def __name__(self) -> str:  # argparse names a type by it in "invalid <name> value"
        return self.kind.__name__

    def describe(self) -> str:
        return describe_range(self.kind, self.bounds)

    def __call__(self, text: str) -> Any:
        """argparse ``type=``: parse ``text`` and apply the rule."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {self.kind.__name__} value: {text!r}") from None
        try:
            return check_value("", value, self.annotation)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}") from None


POSITIVE_INT = Rule.of(PositiveInt)
NON_NEGATIVE_INT = Rule.of(NonNegativeInt)
SEED = Rule.of(Seed)
SPARSITY = Rule.of(Sparsity)
FRACTION = Rule.of(Fraction)
POSITIVE_FLOAT = Rule.of(Positive)
