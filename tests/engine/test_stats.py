"""Student-t intervals and paired differences against scipy."""
import math

import pytest

from fastmtl.engine.stats import mean_interval, paired_difference, t_quantile

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 100])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_mean_interval_matches_scipy():
    values = [0.31, 0.35, 0.28, 0.4]
    mean, half = mean_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 4, scale=stats.sem(values))
    assert mean == pytest.approx(sum(values) / 4)
    assert half == pytest.approx((hi - lo) / 2, rel=1e-9)


def test_missing_values_and_single_seeds():
    assert mean_interval([2.0, float("nan"), None, 4.0])[0] == pytest.approx(3.0)
    mean, half = mean_interval([5.0])
    assert mean == 5.0 and math.isnan(half)
    assert all(math.isnan(v) for v in mean_interval([]))


def test_paired_difference_is_the_interval_of_the_differences():
    a, b = [1.0, 2.0, 3.5], [0.5, 1.8, 3.0]
    assert paired_difference(a, b) == pytest.approx(mean_interval([0.5, 0.2, 0.5]))
    # Shared seed-to-seed variation cancels: the pairs differ by exactly 1.
    assert paired_difference([1.0, 5.0, 9.0], [0.0, 4.0, 8.0]) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="pairs"):
        paired_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="0.5 < p < 1"):
        t_quantile(0.4, 3)
