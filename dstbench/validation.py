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

from .errors import ConfigError

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
    """A finite number of ``kind`` in [low, high] (either bound open or absent)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def __name__(self) -> str:  # argparse names a type by it in "invalid <name> value"
        return self.kind.__name__

    def _show(self, bound: float) -> str:
        return str(int(bound)) if self.kind is int else f"{bound:g}"

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            return f"in {lo}{self._show(self.low)}, {self._show(self.high)}{hi}"
        if self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {self._show(self.low)}"
            return bound if self.kind is int else f"finite and {bound}"
        return "an integer" if self.kind is int else "finite"

    def violated(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if self.kind is int and not isinstance(value, int):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return True
        return self.high is not None and (value >= self.high if self.high_open else value > self.high)

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


POSITIVE_INT = Rule(int, 1)
NON_NEGATIVE_INT = Rule(int, 0)
SEED = Rule(int, 0, MAX_SEED)
SPARSITY = Rule(float, 0, 1, high_open=True)
FRACTION = Rule(float, 0, 1)
MOMENTUM = Rule(float, 0, 1, high_open=True)
NON_NEGATIVE_FLOAT = Rule(float, 0)
POSITIVE_FLOAT = Rule(float, 0, low_open=True)
