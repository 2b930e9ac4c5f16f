"""Range rules for every numeric option: non-finite and out-of-range values are refused up front.

A :class:`Rule` is both a check (``rule.check("--lr", value)``, for config fields and YAML values) and
an argparse ``type=`` (``type=POSITIVE_INT``, for subcommand options), so one table says what each
number may be. ``tests/test_bad_input.py`` fails when a numeric option has no rule or no rejection case.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Range

__all__ = [
    "Rule",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "SEED",
    "SPARSITY",
    "FRACTION",
    "MOMENTUM",
    "NON_NEGATIVE_FLOAT",
    "POSITIVE_FLOAT",
    "MAX_SEED",
]

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit, the range every RNG in the stack (numpy, torch, Python) accepts as is."""


@dataclass(frozen=True)
class Rule:
    """A finite number of ``kind`` within ``bounds``: the :class:`~dstbench.core.hparams.Range` that method
    hyper-parameters carry in their annotations, so options and hyper-parameters share one notion of a range."""

    kind: type
    bounds: Range = Range()

    @property
    def __name__(self) -> str:  # argparse names a type by it in "invalid <name> value"
        return self.kind.__name__

    def describe(self) -> str:
        if self.bounds == Range():
            return "an integer" if self.kind is int else "finite"
        text = self.bounds.describe()
        return text if text.startswith("in ") or self.kind is int else f"finite and {text}"

    def violated(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if self.kind is int and not isinstance(value, int):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return True
        return not self.bounds.contains(value)

    def check(self, option: str, value: Any) -> Any:
        """``value`` if it obeys the rule (None passes: unset), else a one-line :class:`ConfigError`."""
        if value is not None and self.violated(value):
            raise ConfigError(f"{option} must be {self.describe()}, got {value!r}")
        return value

    def __call__(self, text: str) -> Any:
        """argparse ``type=``: parse ``text`` and apply the rule."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {self.kind.__name__} value: {text!r}") from None
        if self.violated(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value


POSITIVE_INT = Rule(int, Range(ge=1))
NON_NEGATIVE_INT = Rule(int, Range(ge=0))
SEED = Rule(int, Range(ge=0, le=MAX_SEED))
SPARSITY = Rule(float, Range(ge=0, lt=1))
FRACTION = Rule(float, Range(ge=0, le=1))
MOMENTUM = Rule(float, Range(ge=0, lt=1))
NON_NEGATIVE_FLOAT = Rule(float, Range(ge=0))
POSITIVE_FLOAT = Rule(float, Range(gt=0))
