"""The numpy rank statistics against scipy on the same values: ties, constants, NaN, tiny inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from regene_search.ranks import average_ranks, kendall_tau_b, spearman_rho


def scipy_tau(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y).statistic)  # variant "b" is scipy's default


def scipy_rho(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) < 1e-9


# Few distinct values, so ties are common; sometimes all equal.
pairs = st.integers(min_value=2, max_value=25).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 4).map(float), min_size=n, max_size=n),
        st.lists(st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 1)), min_size=n, max_size=n),
    )
)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_kendall_and_spearman_match_scipy_with_ties(xy) -> None:
    x, y = xy
    assert same(kendall_tau_b(x, y), scipy_tau(x, y)), (x, y)
    assert same(spearman_rho(x, y), scipy_rho(x, y)), (x, y)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30))
def test_average_ranks_match_scipy(values) -> None:
    np.testing.assert_allclose(average_ranks(values), stats.rankdata(values))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]),  # perfect agreement
        ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),  # perfect disagreement
        ([1, 2, 3], [1, 3, 2]),  # K = 3, one swap
        ([1, 1, 2, 2], [1, 2, 1, 2]),  # ties on both sides, tau 0
        ([0.1, 0.2, 0.2, 0.5, 0.9], [3, 1, 2, 2, 9]),
        ([1, 1, 1, 1], [1, 2, 3, 4]),  # constant x: undefined
        ([1, 2, 3, 4], [7, 7, 7, 7]),  # constant y: undefined
        ([1, 2], [2, 1]),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]),  # NaN propagates
    ],
)
def test_hand_cases_match_scipy(x, y) -> None:
    assert same(kendall_tau_b(x, y), scipy_tau(x, y))
    assert same(spearman_rho(x, y), scipy_rho(x, y))


def test_known_values_and_undefined_cases() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert np.isnan(kendall_tau_b([5, 5, 5], [1, 2, 3])) and np.isnan(spearman_rho([5, 5, 5], [1, 2, 3]))
    assert np.isnan(kendall_tau_b([1], [1])) and np.isnan(spearman_rho([], []))
    with pytest.raises(ValueError, match="equal lengths"):
        kendall_tau_b([1, 2, 3], [1, 2])
