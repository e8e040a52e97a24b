"""Pareto ranks, crowding, hypervolume and promotion against brute force and Optuna."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _fast_non_domination_rank

from regene_search.search.pareto import (
    PROMOTION_METHODS,
    REFERENCE_POINT,
    ParetoFront,
    RankedPoints,
    crowding_distance,
    hypervolume,
    hypervolume_history,
    non_dominated_ranks,
    promote,
    promotion_scores,
    to_minimisation,
)

# A coarse grid makes ties and duplicates common; values above 1 fall outside the reference box.
GRID = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
FINE = st.floats(0.0, 1.2, allow_nan=False)


def point_sets(d: int = 3, max_n: int = 7, elements: st.SearchStrategy = st.one_of(GRID, FINE)) -> st.SearchStrategy:
    return st.integers(0, max_n).flatmap(lambda n: arrays(float, (n, d), elements=elements))


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def brute_ranks(F: np.ndarray) -> list[int]:
    """Peel fronts one at a time: a front is what nothing left over dominates."""
    ranks = [-1] * len(F)
    left = set(range(len(F)))
    rank = 0
    while left:
        front = {i for i in left if not any(dominates(F[j], F[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def brute_crowding(front: np.ndarray) -> list[float]:
    """The documented rule, written out point by point."""
    n, d = front.shape
    distance = [0.0] * n
    spread = False
    for k in range(d):
        column = [float(v) for v in front[:, k]]
        low, high = min(column), max(column)
        if low == high:
            continue
        spread = True
        order = sorted(range(n), key=lambda i: (column[i], i))
        for pos, i in enumerate(order):
            if column[i] in (low, high):
                distance[i] = math.inf
            elif distance[i] != math.inf:
                distance[i] += (column[order[pos + 1]] - column[order[pos - 1]]) / (high - low)
    return distance if spread else [math.inf] * n


def inclusion_exclusion_hv(F: np.ndarray, reference: tuple[float, ...]) -> float:
    """Volume of the union of boxes [p, reference], summed exactly over all subsets."""
    ref = np.asarray(reference)
    boxes = [p for p in F if np.all(p < ref)]
    total = 0.0
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            corner = np.max(subset, axis=0)
            total += (-1) ** (size + 1) * float(np.prod(ref - corner))
    return total


# ranks


@settings(max_examples=150, deadline=None)
@given(point_sets(d=3, max_n=10))
def test_ranks_match_brute_force(F: np.ndarray) -> None:
    assert non_dominated_ranks(F).tolist() == brute_ranks(F)


@settings(max_examples=60, deadline=None)
@given(point_sets(d=3, max_n=40))
def test_ranks_match_optuna(F: np.ndarray) -> None:
    assert non_dominated_ranks(F).tolist() == _fast_non_domination_rank(F).tolist()


def test_ranks_small_cases() -> None:
    assert non_dominated_ranks(np.empty((0, 3))).tolist() == []
    assert non_dominated_ranks(np.array([[0.3, 0.2, 0.1]])).tolist() == [0]
    F = np.array([[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.0, 0.5, 0.0]])
    assert non_dominated_ranks(F).tolist() == [0, 0, 1, 0]


def test_failed_rows_are_excluded() -> None:
    F = np.array([[0.5, 0.5, 0.5], [np.nan, 0.0, 0.0], [0.6, 0.6, 0.6]])
    ranks = non_dominated_ranks(F)
    assert ranks.tolist() == [0, -1, 1]
    assert np.isnan(crowding_distance(F, ranks)[1])
    assert hypervolume(F) == pytest.approx(0.125)
    assert hypervolume_history(F).tolist() == pytest.approx([0.125, 0.125, 0.125])
    assert promote(F, k=3) == [0, 2]
    with pytest.raises(ValueError, match="no successful trial"):
        promote(np.full((2, 3), np.nan), "knee")


# crowding


@settings(max_examples=150, deadline=None)
@given(point_sets(d=3, max_n=10))
def test_crowding_matches_brute_force(F: np.ndarray) -> None:
    ranks = non_dominated_ranks(F)
    got = crowding_distance(F, ranks)
    for rank in set(ranks.tolist()):
        members = np.flatnonzero(ranks == rank)
        assert got[members].tolist() == pytest.approx(brute_crowding(F[members]))


def test_crowding_hand_computed() -> None:
    # One 2-D front: x = 0, .2, .5, 1 and y = 1, .6, .3, 0; the middle points' cuboid sides.
    F = np.array([[0.0, 1.0], [0.2, 0.6], [0.5, 0.3], [1.0, 0.0]])
    got = crowding_distance(F, non_dominated_ranks(F))
    assert got.tolist() == pytest.approx([math.inf, 0.5 + 0.7, 0.8 + 0.6, math.inf])


def test_crowding_zero_range_objective_adds_nothing() -> None:
    F = np.array([[0.0, 1.0, 0.3], [0.5, 0.5, 0.3], [1.0, 0.0, 0.3]])
    assert crowding_distance(F, non_dominated_ranks(F)).tolist() == [math.inf, 2.0, math.inf]
    single = np.array([[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]])
    assert crowding_distance(single, non_dominated_ranks(single)).tolist() == [math.inf, math.inf]


# hypervolume


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_hypervolume_matches_inclusion_exclusion(d: int, data: st.DataObject) -> None:
    F = data.draw(point_sets(d=d, max_n=7))
    reference = (1.0,) * d
    assert hypervolume(F, reference) == pytest.approx(inclusion_exclusion_hv(F, reference), abs=1e-12)


@pytest.mark.parametrize("d", [2, 3, 4])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_hypervolume_matches_optuna(d: int, data: st.DataObject) -> None:
    F = data.draw(point_sets(d=d, max_n=40 if d < 4 else 15))
    reference = np.ones(d)
    inside = F[np.all(F <= reference, axis=1)]
    assert hypervolume(F, reference) == pytest.approx(compute_hypervolume(inside, reference), abs=1e-12)


def test_hypervolume_matches_optuna_on_a_large_front() -> None:
    rng = np.random.default_rng(0)
    F = rng.dirichlet(np.ones(3), size=300)  # all on the simplex: every point is on the front
    assert hypervolume(F) == pytest.approx(compute_hypervolume(F, np.ones(3)), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(point_sets(d=3, max_n=8), st.data())
def test_hypervolume_ignores_dominated_points(F: np.ndarray, data: st.DataObject) -> None:
    if len(F) == 0:
        return
    base = F[data.draw(st.integers(0, len(F) - 1))]
    worse = base + data.draw(arrays(float, 3, elements=st.floats(0.0, 0.5)))
    assert hypervolume(np.vstack([F, worse])) == pytest.approx(hypervolume(F), abs=1e-12)


def test_hypervolume_simple_values() -> None:
    assert hypervolume(np.empty((0, 3))) == 0.0
    assert hypervolume(np.array([[0.0, 0.0, 0.0]])) == 1.0
    assert hypervolume(np.array([[0.5, 0.5, 1.0]])) == 0.0  # on the reference plane
    assert hypervolume(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])) == pytest.approx(0.125)
    assert hypervolume(np.array([[0.5, 0.0], [0.0, 0.5]]), (1.0, 1.0)) == pytest.approx(0.75)


@settings(max_examples=100, deadline=None)
@given(point_sets(d=3, max_n=12, elements=st.one_of(GRID, FINE, st.just(np.nan))))
def test_history_is_prefix_hypervolume_and_monotone(F: np.ndarray) -> None:
    history = hypervolume_history(F)
    assert len(history) == len(F)
    assert np.all(np.diff(history) >= 0)
    for i in range(len(F)):
        assert history[i] == pytest.approx(hypervolume(F[: i + 1]), abs=1e-12)


# the incremental front


def check_front(front: ParetoFront, points: dict[str, np.ndarray]) -> None:
    """The incremental front and hypervolume equal the from-scratch ones over the current points."""
    keys = [k for k, p in points.items() if not np.isnan(p).any()]
    F = np.array([points[k] for k in keys]).reshape(-1, 3)
    assert front.front_keys == {k for k, rank in zip(keys, non_dominated_ranks(F)) if rank == 0}
    assert front.hypervolume == pytest.approx(hypervolume(F), abs=1e-12)
    assert front.hypervolume == pytest.approx(compute_hypervolume(F[np.all(F <= 1, axis=1)], np.ones(3)), abs=1e-12)


# A step sets a key's point (a new one, or a replacement: a trial's next report) or removes the key.
STEPS = st.lists(
    st.tuples(st.sampled_from("abcdefghij"), st.one_of(arrays(float, 3, elements=st.one_of(GRID, FINE)), arrays(float, 3, elements=GRID), st.none())),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_incremental_front_equals_from_scratch_after_every_step(steps) -> None:
    front, points = ParetoFront(), {}
    for key, point in steps:
        if point is None:
            front.discard(key)
            points.pop(key, None)
        else:
            front.set(key, point)
            points[key] = point
        check_front(front, points)


# A step moves a key's point by a step that is never worse in any objective (training that helps,
# the common case: the front's quick path) or worse in some; None removes the key.
MOVES = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.one_of(arrays(float, 3, elements=st.sampled_from([0.0, 0.0, 0.1, 0.25])),
                                                     arrays(float, 3, elements=st.sampled_from([-0.25, 0.0, 0.1])), st.none())),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(MOVES)
def test_incremental_front_equals_from_scratch_as_points_improve(moves) -> None:
    front, points = ParetoFront(), {}
    for key, step in moves:
        if step is None:
            front.discard(key)
            points.pop(key, None)
            continue
        point = points.get(key, np.full(3, 0.9)) - step
        kept = front.front  # the cached array: a later change must not reach it through an old reference
        front.set(key, point)
        points[key] = point
        check_front(front, points)
        assert not kept.flags.writeable


@pytest.mark.parametrize("seed", range(3))
def test_incremental_front_on_many_random_points_with_ties_and_duplicates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    front, points = ParetoFront(), {}
    for step in range(600):
        key = int(rng.integers(0, 300))
        if rng.random() < 0.1:
            front.discard(key)
            points.pop(key, None)
        else:
            point = rng.integers(0, 12, size=3) / 10 if rng.random() < 0.5 else rng.random(3)  # coarse: ties, duplicates, past the reference
            if rng.random() < 0.02:
                point[0] = np.nan  # a failed report: the key leaves the front
            front.set(key, point)
            points[key] = point
        if step % 25 == 0:
            check_front(front, points)
    check_front(front, points)


def test_removing_the_only_dominating_point_frees_what_it_dominated() -> None:
    front = ParetoFront()
    front.set("best", [0.1, 0.1, 0.1])
    front.set("under", [0.2, 0.2, 0.2])
    front.set("under twin", [0.2, 0.2, 0.2])
    front.set("deeper", [0.3, 0.3, 0.3])
    assert front.front_keys == {"best"} and front.hypervolume == pytest.approx(0.9**3)
    front.discard("best")
    assert front.front_keys == {"under", "under twin"} and front.hypervolume == pytest.approx(0.8**3)
    front.set("under", [0.5, 0.5, 0.5])  # a trial's later report may be worse: replaced, not kept
    assert front.front_keys == {"under twin"} and len(front) == 3


@settings(max_examples=150, deadline=None)
@given(point_sets(d=3, max_n=30))
def test_ranked_points_equal_a_full_sort_after_every_arrival(F: np.ndarray) -> None:
    ranked = RankedPoints()
    for i, point in enumerate(F):
        assert ranked.add(point) == i
        assert ranked.ranks.tolist() == non_dominated_ranks(F[: i + 1]).tolist()
        assert sorted(j for layer in ranked.layers for j in layer) == list(range(i + 1))


def test_ranked_points_on_many_random_points_with_ties() -> None:
    rng = np.random.default_rng(0)
    F = np.where(rng.random((500, 3)) < 0.5, rng.integers(0, 6, (500, 3)) / 5, rng.random((500, 3)))
    ranked = RankedPoints()
    for i, point in enumerate(F):
        ranked.add(point)
        if i % 50 == 49:
            assert ranked.ranks.tolist() == _fast_non_domination_rank(F[: i + 1]).tolist()
    with pytest.raises(ValueError, match="NaN"):
        ranked.add([np.nan, 0.0, 0.0])


# conversion and promotion


def test_to_minimisation_flips_accuracy_only() -> None:
    raw = np.array([[0.9, 0.1, 0.2]])
    np.testing.assert_allclose(to_minimisation(raw), [[0.1, 0.1, 0.2]])
    assert REFERENCE_POINT == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        to_minimisation(np.zeros((2, 2)))


HAND_FRONT = np.array(
    [
        [0.0, 1.0, 0.5],  # 0: best accuracy, worst MAE
        [0.9, 0.9, 0.9],  # 1: dominated by 2
        [0.4, 0.4, 0.5],  # 2: the knee
        [1.0, 0.0, 0.5],  # 3: best MAE, worst accuracy
        [0.7, 0.2, 0.5],  # 4: on the front, further from the ideal than 2
        [np.nan, 0.0, 0.0],  # 5: failed
    ]
)


def test_knee_on_hand_made_front() -> None:
    # Scaled over the front, sparsity has zero range; distances are 1, .566, 1, .728 for 0, 2, 3, 4.
    assert promote(HAND_FRONT, "knee")[0] == 2
    assert promote(HAND_FRONT, "knee", weights=(1.0, 0.0, 0.0)) == [2]  # weights are for "weighted" only
    assert promote(HAND_FRONT, "knee", k=4) == [2, 4, 0, 3]
    assert promote(HAND_FRONT, "knee", k=10) == [2, 4, 0, 3, 1]


def test_knee_tie_goes_to_lowest_index() -> None:
    F = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert promote(F, "knee")[0] == 0
    assert promote(F[::-1], "knee")[0] == 0


def test_weighted_index() -> None:
    assert promote(HAND_FRONT, "weighted", weights=(1.0, 0.0, 0.0))[0] == 0
    assert promote(HAND_FRONT, "weighted", weights=(0.0, 1.0, 0.0))[0] == 3
    assert promote(HAND_FRONT, "weighted", weights=(1.0, 1.0, 1.0))[0] == 2
    assert promote(HAND_FRONT, "weighted", weights=(0.0, 1.0, 0.0), k=2) == [3, 4]


def test_front_promotes_every_front_point_in_knee_order() -> None:
    # Front rows 0, 2, 3, 4 (1 is dominated, 5 failed); knee distances 1, .566, 1, .728.
    assert promote(HAND_FRONT, "front") == [2, 4, 0, 3]
    assert promote(HAND_FRONT, "front", k=1) == promote(HAND_FRONT, "front", k=10) == [2, 4, 0, 3]
    assert promote(HAND_FRONT, "knee", k=4) == promote(HAND_FRONT, "front")


def test_promotion_scores_are_what_promote_orders_by() -> None:
    knee = promotion_scores(HAND_FRONT, "knee")
    assert np.isnan(knee[[1, 5]]).all()
    np.testing.assert_allclose(knee[[0, 2, 3, 4]], [1.0, np.hypot(0.4, 0.4), 1.0, np.hypot(0.7, 0.2)])
    np.testing.assert_array_equal(promotion_scores(HAND_FRONT, "front"), knee)
    weighted = promotion_scores(HAND_FRONT, "weighted", weights=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(weighted[[0, 2, 3, 4]], [1.0, 0.4, 0.0, 0.2])
    assert np.isnan(promotion_scores(np.full((2, 3), np.nan))).all()


@pytest.mark.parametrize("method", PROMOTION_METHODS)
def test_promotion_with_the_callers_ranks_is_the_same_as_without(method: str) -> None:
    rng = np.random.default_rng(7)
    F = rng.random((200, 3))
    F[rng.choice(200, 10, replace=False)] = np.nan
    ranks = non_dominated_ranks(F)
    np.testing.assert_array_equal(promotion_scores(F, method, weights=(1, 2, 3), ranks=ranks), promotion_scores(F, method, weights=(1, 2, 3)))
    assert promote(F, method, weights=(1, 2, 3), k=30, ranks=ranks) == promote(F, method, weights=(1, 2, 3), k=30)


def test_top_k_fills_with_rank_then_crowding() -> None:
    F = np.array(
        [
            [0.0, 0.0, 0.0],  # front
            [0.5, 0.5, 0.9],  # rank 1, interior of its front
            [0.1, 0.9, 0.9],  # rank 1, boundary
            [0.9, 0.1, 0.9],  # rank 1, boundary
            [0.95, 0.95, 0.95],  # rank 2
        ]
    )
    assert promote(F, "knee", k=5) == [0, 2, 3, 1, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "best"}, "unknown promotion method"),
        ({"method": "front", "k": 0}, "k must be"),
        ({"method": "weighted"}, "needs weights"),
        ({"method": "weighted", "weights": (1.0, -1.0, 0.0)}, "non-negative"),
        ({"method": "weighted", "weights": (1.0, 1.0)}, "3 finite"),
        ({"k": 0}, "k must be"),
    ],
)
def test_promote_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        promote(HAND_FRONT, **kwargs)
