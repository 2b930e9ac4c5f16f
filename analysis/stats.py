"""Statistics across seeds: is a difference between two methods real, or noise?

Each cell of a table (one setting, several seeds) gets its mean, sample standard deviation and a 95 %
confidence interval for the mean from Student's t distribution with n - 1 degrees of freedom.

Two cells are compared with **Welch's t-test** (``scipy.stats.ttest_ind(..., equal_var=False)``):

* it does not assume the two methods have the same seed-to-seed spread (they often do not: a method
  that resamples its topology is noisier than static sparse training), and
* at equal spreads it loses almost nothing against Student's pooled test, so there is no reason to
  choose the pooled one.

The difference of means gets its 95 % interval from the same Welch standard error and
Welch–Satterthwaite degrees of freedom, so the interval excludes 0 exactly when p < 0.05.

The **smallest detectable difference** answers "what could these runs have seen at all": the true
difference that a two-sided test at alpha = 0.05 would detect with 80 % power, given the observed spread
and the number of seeds, using the usual normal-shift approximation with t quantiles,
``(t[1 - alpha/2, df] + t[power, df]) * SE`` (Welch SE and df). A 0.5-point "win" below that line says
nothing either way.

Cells with fewer than two seeds have no interval and no test; they say so in words ("n=1: no
interval"), never NaN.

**Bounded quantities.** A t interval is symmetric and knows nothing of the scale: two seeds at 98.3 %
and 99.2 % give ``[95.0, 102.5]``. Given ``bounds`` (accuracy: ``[0, 1]``; a difference of two
accuracies: ``[-1, 1]``), both intervals are clipped to them, which keeps their coverage (the true mean
lies inside the bounds) and only drops values that cannot happen; the tables say so in their note.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "POWER",
    "CONFIDENCE",
    "CellStats",
    "Comparison",
    "describe",
    "welch",
    "seeds_needed",
    "NO_INTERVAL",
    "ACCURACY_BOUNDS",
    "DIFFERENCE_BOUNDS",
]

ALPHA = 0.05
"""Two-sided significance level of every test and interval (95 % intervals)."""
CONFIDENCE = 1.0 - ALPHA
POWER = 0.8
"""Power at which the smallest detectable difference is stated."""
NO_INTERVAL = "n=1: no interval"
ACCURACY_BOUNDS = (0.0, 1.0)
"""Where an accuracy (a fraction) can lie."""
DIFFERENCE_BOUNDS = (-1.0, 1.0)
"""Where a difference of two accuracies can lie."""


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """An interval clipped to the possible range (unchanged without ``bounds``)."""
    if bounds is None:
        return low, high
    return min(max(low, bounds[0]), bounds[1]), min(max(high, bounds[0]), bounds[1])


@dataclass(frozen=True)
class CellStats:
    """n, mean, sample std and the Student-t confidence interval of the mean (None below n = 2)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None


def describe(
    values: Sequence[float], confidence: float = CONFIDENCE, *, bounds: tuple[float, float] | None = None
) -> CellStats:
    """Mean, std and the t interval ``mean ± t[(1+c)/2, n-1] · s/√n`` of one cell's seeds, clipped to
    ``bounds`` when given."""
    if not values:
        raise ValueError("describe() needs at least one value")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return CellStats(n, mean, None, None, None)
    from scipy import stats as scipy_stats  # imported on use: `dstbench --help` stays fast

    std = statistics.stdev(values)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return CellStats(n, mean, std, *_clip(mean - half, mean + half, bounds))


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` (a baseline): difference of means a - b, its Welch interval and test.

    ``t``, ``df``, ``p``, the interval and ``detectable`` are None when a test is impossible (a cell
    with one seed, or no spread at all in either cell); ``verdict`` then says why in words.
    """

    n_a: int
    n_b: int
    difference: float
    ci_low: float | None
    ci_high: float | None
    t: float | None
    df: float | None
    p: float | None
    detectable: float | None
    verdict: str


def _n_label(n_a: int, n_b: int) -> str:
    return f"n={n_a}" if n_a == n_b else f"n={n_a} vs {n_b}"


def _detectable(se: float, df: float, alpha: float, power: float) -> float:
    """The smallest true difference a two-sided test at ``alpha`` finds with ``power``, given its SE and df."""
    from scipy import stats as scipy_stats

    return (float(scipy_stats.t.ppf(1 - alpha / 2, df)) + float(scipy_stats.t.ppf(power, df))) * se


def _welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch–Satterthwaite degrees of freedom."""
    a, b = var_a / n_a, var_b / n_b
    return (a + b) ** 2 / (a**2 / (n_a - 1) + b**2 / (n_b - 1))


def seeds_needed(
    std_a: float, std_b: float, difference: float, *, alpha: float = ALPHA, power: float = POWER, limit: int = 10_000
) -> int:
    """Seeds per method (the same number on both sides) at which :func:`welch` would state ``difference``
    as its detectable Δ or less, if the seed-to-seed spreads stayed ``std_a`` and ``std_b``.

    This answers "how many seeds would it take to see a 1-point difference" from the spreads measured so
    far; it is the inverse of ``Comparison.detectable`` over n, with the same formula, so the two never
    disagree. Spreads estimated from few seeds are themselves uncertain: read the answer as a size, not a
    promise.
    """
    if difference <= 0 or std_a < 0 or std_b < 0 or std_a == std_b == 0:
        raise ValueError("seeds_needed() needs a positive difference and a positive spread")
    for n in range(2, limit + 1):
        se = math.sqrt((std_a**2 + std_b**2) / n)
        if _detectable(se, _welch_df(std_a**2, n, std_b**2, n), alpha, power) <= difference:
            return n
    raise ValueError(f"more than {limit} seeds per method would be needed")


def welch(
    a: Sequence[float], b: Sequence[float], *, alpha: float = ALPHA, power: float = POWER,
    bounds: tuple[float, float] | None = None,
) -> Comparison:
    """Welch's two-sided t-test of mean(a) against mean(b), with the interval of the difference
    (clipped to ``bounds`` when given: the test and p are unchanged).

    The verdict reads "better" / "worse" when p < alpha (higher is better: accuracies), otherwise
    "no detectable difference at n=…".
    """
    n_a, n_b = len(a), len(b)
    if not n_a or not n_b:
        raise ValueError("welch() needs at least one value on each side")
    difference = statistics.fmean(a) - statistics.fmean(b)
    if n_a < 2 or n_b < 2:
        return Comparison(n_a, n_b, difference, None, None, None, None, None, None, f"{_n_label(n_a, n_b)}: no test")
    se = math.sqrt(statistics.variance(a) / n_a + statistics.variance(b) / n_b)
    if se == 0.0:
        # Identical numbers on every seed of both cells (e.g. a deterministic toy run): no spread to test.
        verdict = "identical on every seed" if difference == 0 else "no spread across seeds: no test"
        return Comparison(n_a, n_b, difference, None, None, None, None, None, None, verdict)
    from scipy import stats as scipy_stats

    with warnings.catch_warnings():
        # scipy warns when one cell's seeds agree exactly (its variance is 0 up to rounding); the test is
        # still well defined by the other cell's spread.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = scipy_stats.ttest_ind(a, b, equal_var=False)
    df = float(result.df)
    interval = result.confidence_interval(confidence_level=1.0 - alpha)
    p = float(result.pvalue)
    detectable = _detectable(se, df, alpha, power)
    if p < alpha:
        verdict = "better" if difference > 0 else "worse"
    else:
        verdict = f"no detectable difference at {_n_label(n_a, n_b)}"
    low, high = _clip(float(interval.low), float(interval.high), bounds)
    return Comparison(n_a, n_b, difference, low, high, float(result.statistic), df, p, detectable, verdict)
