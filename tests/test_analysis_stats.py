"""Statistics across seeds, checked against numbers computed here by hand (textbook formulas, Student-t
table values and a numerically integrated t density), never through the scipy path the module uses."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.analysis.stats import ACCURACY_BOUNDS, DIFFERENCE_BOUNDS, NO_INTERVAL, describe, seeds_needed, welch

# Printed Student-t tables (two-sided 95 %): t[0.975, df].
T_TABLE_975 = {2: 4.303, 4: 2.776}


def _t_density(x: float, df: float) -> float:
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


def _t_cdf(x: float, df: float, steps: int = 20_000) -> float:
    """P(T <= x) by Simpson's rule on [0, |x|] (the density is symmetric)."""
    h = abs(x) / steps
    total = _t_density(0, df) + _t_density(abs(x), df)
    total += sum((4 if i % 2 else 2) * _t_density(i * h, df) for i in range(1, steps))
    half = total * h / 3
    return 0.5 + half if x >= 0 else 0.5 - half


def _t_quantile(q: float, df: float) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df, 4000) < q else (lo, mid)
    return (lo + hi) / 2


def test_student_t_interval_of_one_cell_matches_the_printed_table() -> None:
    cell = describe([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3, df = 2
    assert (cell.n, cell.mean, cell.std) == (3, 2.0, 1.0)
    half = T_TABLE_975[2] * 1.0 / math.sqrt(3)  # 2.484
    assert cell.ci_low == pytest.approx(2.0 - half, abs=1e-3)
    assert cell.ci_high == pytest.approx(2.0 + half, abs=1e-3)


def test_welch_worked_example_t_df_p_interval_and_detectable_difference() -> None:
    a = [94.0, 94.2, 94.4]  # mean 94.2, variance 0.04
    b = [93.5, 93.8, 94.1]  # mean 93.8, variance 0.09
    va, vb = 0.04 / 3, 0.09 / 3
    se = math.sqrt(va + vb)  # 0.20817
    t = 0.4 / se  # 1.9215
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch-Satterthwaite: 3.4845
    p = 2 * (1 - _t_cdf(t, df))
    assert (round(t, 4), round(df, 4)) == (1.9215, 3.4845)
    result = welch(a, b)
    assert result.difference == pytest.approx(0.4)
    assert result.t == pytest.approx(t, rel=1e-9)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.p == pytest.approx(p, abs=1e-6)
    assert 0.05 < result.p < 0.2  # about 0.137: not significant at n = 3
    q = _t_quantile(0.975, df)
    assert result.ci_low == pytest.approx(0.4 - q * se, abs=1e-4)
    assert result.ci_high == pytest.approx(0.4 + q * se, abs=1e-4)
    assert result.detectable == pytest.approx((q + _t_quantile(0.8, df)) * se, abs=1e-4)
    assert result.verdict == "no detectable difference at n=3"


def test_equal_spreads_give_df_4_and_the_table_t_value() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]  # equal variances, n = 3 each: Welch df = 2(n-1) = 4
    result = welch(a, b)
    se = math.sqrt(1 / 3 + 1 / 3)
    assert result.df == pytest.approx(4.0)
    assert result.t == pytest.approx(-3 / se)  # -3.674
    assert result.ci_high == pytest.approx(-3 + T_TABLE_975[4] * se, abs=1e-3)
    assert result.p == pytest.approx(2 * _t_cdf(-3 / se, 4), abs=1e-6)  # 0.0213
    assert result.verdict == "worse"
    assert welch(b, a).verdict == "better"


def test_one_seed_says_so_in_words_never_nan() -> None:
    cell = describe([0.9])
    assert (cell.n, cell.mean, cell.std, cell.ci_low, cell.ci_high) == (1, 0.9, None, None, None)
    assert NO_INTERVAL == "n=1: no interval"
    result = welch([0.9], [0.8, 0.85])
    assert result.p is None and result.ci_low is None and result.detectable is None
    assert result.verdict == "n=1 vs 2: no test"
    assert result.difference == pytest.approx(0.075)


def test_no_spread_is_not_a_test() -> None:
    assert welch([0.5, 0.5], [0.5, 0.5]).verdict == "identical on every seed"
    assert welch([0.6, 0.6], [0.5, 0.5]).p is None


# Accuracies are counts over a test set: k / 10000.
values = st.lists(st.integers(0, 10_000).map(lambda k: k / 10_000), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None)
@given(values, values)
def test_swapping_the_cells_negates_the_difference_and_keeps_p(a: list[float], b: list[float]) -> None:
    forward, backward = welch(a, b), welch(b, a)
    assert forward.difference == pytest.approx(-backward.difference, abs=1e-12)
    if forward.p is not None and backward.p is not None:
        assert forward.p == pytest.approx(backward.p)
        assert forward.ci_low is not None and forward.ci_high is not None
        assert forward.ci_low <= forward.difference <= forward.ci_high
        # The interval excludes 0 exactly when the test rejects at 5 %.
        assert (forward.ci_low > 0 or forward.ci_high < 0) == (forward.p < 0.05) or abs(forward.p - 0.05) < 1e-9


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6))
def test_bounded_intervals_are_the_t_interval_clipped_to_the_range(values: list[float]) -> None:
    free, bounded = describe(values), describe(values, bounds=ACCURACY_BOUNDS)
    assert free.ci_low is not None and free.ci_high is not None
    assert bounded.ci_low == min(max(free.ci_low, 0.0), 1.0) and bounded.ci_high == min(max(free.ci_high, 0.0), 1.0)
    assert 0.0 <= bounded.ci_low <= bounded.mean <= bounded.ci_high <= 1.0
    assert (bounded.n, bounded.mean, bounded.std) == (free.n, free.mean, free.std)


def test_bounded_welch_interval_is_clipped_and_the_test_is_unchanged() -> None:
    a, b = [0.05, 0.95], [0.90, 0.99]
    free, bounded = welch(a, b), welch(a, b, bounds=DIFFERENCE_BOUNDS)
    assert free.ci_low is not None and free.ci_high is not None and free.ci_low < -1.0 and free.ci_high > 1.0
    assert (bounded.ci_low, bounded.ci_high) == (-1.0, 1.0)
    assert (bounded.p, bounded.t, bounded.df, bounded.verdict, bounded.detectable) == (free.p, free.t, free.df, free.verdict, free.detectable)
    two_seeds = describe([0.9836, 0.9910], bounds=ACCURACY_BOUNDS)  # the README's [95.01, 102.45]
    assert two_seeds.ci_high == 1.0 and two_seeds.ci_low == pytest.approx(0.9873 - 12.7062 * 0.0037, abs=1e-4)


def test_seeds_needed_for_a_one_sd_difference_by_hand() -> None:
    # Equal spreads s on both sides: SE = s * sqrt(2 / n), Welch df = 2 (n - 1). The normal approximation
    # 2 (1.96 + 0.84)^2 = 15.7 seeds is a floor; the t quantiles push the answer to the next n or two.
    def detectable(n: int) -> float:
        df = 2 * (n - 1)
        return (_t_quantile(0.975, df) + _t_quantile(0.8, df)) * math.sqrt(2 / n)

    n = seeds_needed(1.0, 1.0, 1.0)
    assert 16 <= n <= 18
    assert detectable(n) <= 1.0 < detectable(n - 1)


def _with_spread(n: int, std: float) -> list[float]:
    """n values whose sample standard deviation is exactly ``std``."""
    base = [float(i) for i in range(n)]
    scale = std / statistics.stdev(base)
    return [scale * v for v in base]


@settings(max_examples=30, deadline=None)
@given(
    std_a=st.floats(0.2, 3.0), std_b=st.floats(0.2, 3.0), difference=st.floats(0.5, 4.0),
)
def test_seeds_needed_is_where_welch_first_states_the_difference_as_detectable(std_a: float, std_b: float, difference: float) -> None:
    n = seeds_needed(std_a, std_b, difference)
    at_n = welch(_with_spread(n, std_a), [v + 10 for v in _with_spread(n, std_b)]).detectable
    assert at_n is not None and at_n <= difference * (1 + 1e-9)
    if n > 2:
        below = welch(_with_spread(n - 1, std_a), [v + 10 for v in _with_spread(n - 1, std_b)]).detectable
        assert below is not None and below > difference * (1 - 1e-9)


@pytest.mark.parametrize("args", [(1.0, 1.0, 0.0), (1.0, 1.0, -1.0), (0.0, 0.0, 1.0), (-1.0, 1.0, 1.0)])
def test_seeds_needed_refuses_what_has_no_answer(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        seeds_needed(*args)
