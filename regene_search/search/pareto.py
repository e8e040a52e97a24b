"""Pareto analysis of trials: non-dominated ranks, crowding, hypervolume and promotion.

Every trial has three objectives, `OBJECTIVES`, with directions `MODES`. `to_minimisation`
turns them into the form every other function here takes: an (n, d) float array `F` in which
lower is better in every column, i.e. (1 - accuracy, decoder_mae, latent_sparsity).

Reference point. All three objectives already live in [0, 1] (accuracy, the MAE of pixels in
[0, 1], a sparsity fraction), so the minimisation form *is* the normalised objective space and
no per-run rescaling is needed. Hypervolume is measured against `REFERENCE_POINT = (1, 1, 1)`,
the worst value of each objective; the best possible hypervolume is therefore 1, and
hypervolumes of different runs, datasets and budgets are directly comparable.

Failed trials. A row holding any NaN is a failed trial: it gets rank -1, crowding NaN, adds
nothing to any hypervolume and is never promoted.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

OBJECTIVES = ("accuracy", "decoder_mae", "latent_sparsity")
MODES = ("max", "min", "min")
REFERENCE_POINT = (1.0, 1.0, 1.0)
PROMOTION_METHODS = ("knee", "weighted", "front")


_FLIP = np.array([mode == "max" for mode in MODES])


def to_minimisation(points: np.ndarray) -> np.ndarray:
    """(n, 3) objective values in `OBJECTIVES` order -> minimisation form (maximised x -> 1 - x)."""
    points = _as_matrix(points, d=len(OBJECTIVES))
    return np.where(_FLIP, 1.0 - points, points)


def non_dominated_ranks(F: np.ndarray) -> np.ndarray:
    """Fast non-dominated sort (Deb et al. 2002): rank 0 is the Pareto front, -1 a failed row.

    Equal points never dominate each other, so duplicates share a rank.
    """
    F = _as_matrix(F)
    ranks = np.full(len(F), -1, dtype=int)
    valid = np.flatnonzero(_valid(F))
    dominates = _domination_matrix(F[valid])
    dominators = dominates.sum(axis=0)
    remaining = np.ones(len(valid), dtype=bool)
    rank = 0
    while remaining.any():
        front = remaining & (dominators == 0)
        ranks[valid[front]] = rank
        remaining &= ~front
        dominators = dominators - dominates[front].sum(axis=0)
        rank += 1
    return ranks


def crowding_distance(F: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within each front; NaN for failed rows.

    Each objective is normalised by its range within the front. Points attaining a front's
    minimum or maximum of an objective with non-zero range are boundary points (inf); an
    objective with zero range adds nothing. A front that is a single distinct point is all
    boundary (inf). Ties are broken by row index, so the result is deterministic.
    """
    F = _as_matrix(F)
    ranks = np.asarray(ranks)
    distance = np.full(len(F), np.nan)
    for rank in np.unique(ranks[ranks >= 0]):
        members = np.flatnonzero(ranks == rank)
        distance[members] = _front_crowding(F[members])
    return distance


def _front_crowding(front: np.ndarray) -> np.ndarray:
    distance = np.zeros(len(front))
    spread = False
    for column in front.T:
        low, high = column.min(), column.max()
        if high == low:
            continue
        spread = True
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / (high - low)
        distance[(column == low) | (column == high)] = np.inf
    if not spread:
        distance[:] = np.inf
    return distance


def hypervolume(F: np.ndarray, reference: Sequence[float] = REFERENCE_POINT) -> float:
    """Exact volume dominated by the points of `F` and bounded by `reference`.

    Failed rows and points not strictly better than the reference in every objective add
    nothing. Slices along the last objective down to an exact 2-D sweep (HSO), which is
    O(n^2 log n) in 3-D and exact in any dimension.
    """
    reference = np.asarray(reference, dtype=float)
    F = _as_matrix(F, d=len(reference))
    F = F[_valid(F) & np.all(F < reference, axis=1)]
    if len(F) == 0:
        return 0.0
    if F.shape[1] == 3:
        return _volume_3d(F, reference)
    F = np.unique(F, axis=0)
    F = F[_domination_matrix(F).sum(axis=0) == 0]
    return float(_slice_volume(F, reference))


def _volume_3d(F: np.ndarray, reference: np.ndarray) -> float:
    """Exact 3-D volume in O(n log n) (the sweep of Beume et al. 2009): points by ascending third
    objective; the area the first two objectives dominate so far, kept as a staircase (first
    objective ascending, second descending) and updated by what each new point adds; the volume
    is that area times each gap to the next point's third objective."""
    F = F[np.lexsort((F[:, 1], F[:, 0], F[:, 2]))]
    rx, ry, rz = (float(v) for v in reference)
    xs: list[float] = []  # the staircase
    ys: list[float] = []
    area = volume = 0.0
    for k, (x, y, z) in enumerate(F.tolist()):
        i = bisect.bisect_right(xs, x)  # xs[:i] <= x < xs[i:]
        if i and ys[i - 1] <= y:
            pass  # dominated in the first two objectives by an earlier point: adds no area
        else:
            j = i  # the staircase points the new one covers: x' >= x and y' >= y, a run from i
            while j < len(xs) and ys[j] >= y:
                j += 1
            edges = [x, *xs[i:j], xs[j] if j < len(xs) else rx]
            heights = [ys[i - 1] if i else ry, *ys[i:j]]  # the staircase's height over each gap
            area += sum((h - y) * (b - a) for h, a, b in zip(heights, edges, edges[1:]))
            i -= bool(i and xs[i - 1] == x)  # a point level with it, higher: covered too
            xs[i:j], ys[i:j] = [x], [y]
        top = F[k + 1, 2] if k + 1 < len(F) else rz
        volume += area * (top - z)
    return float(volume)


def _slice_volume(F: np.ndarray, reference: np.ndarray) -> float:
    if F.shape[1] == 1:
        return reference[0] - F[:, 0].min()
    if F.shape[1] == 2:
        F = F[np.lexsort((F[:, 1], F[:, 0]))]
        lowest_y = np.minimum.accumulate(F[:, 1])
        widths = np.diff(np.append(F[:, 0], reference[0]))
        return float(np.sum(widths * (reference[1] - lowest_y)))
    F = F[np.argsort(F[:, -1], kind="stable")]
    tops = np.append(F[1:, -1], reference[-1])
    volume = 0.0
    for i in np.flatnonzero(tops > F[:, -1]):
        volume += _slice_volume(F[: i + 1, :-1], reference[:-1]) * (tops[i] - F[i, -1])
    return volume


def hypervolume_history(F: np.ndarray, reference: Sequence[float] = REFERENCE_POINT) -> np.ndarray:
    """Hypervolume after each trial, rows in completion order; failed rows repeat the last value.

    Only a point that no earlier point weakly dominates can grow the volume, so the front is
    kept incrementally and the volume recomputed only then.
    """
    reference = np.asarray(reference, dtype=float)
    F = _as_matrix(F, d=len(reference))
    history = np.zeros(len(F))
    front = np.empty((0, F.shape[1]))
    volume = 0.0
    for i, point in enumerate(F):
        useful = not np.isnan(point).any() and np.all(point < reference)
        if useful and not np.any(np.all(front <= point, axis=1)):
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            volume = hypervolume(front, reference)
        history[i] = volume
    return history


class ParetoFront:
    """The non-dominated points of a changing set of keyed points, and their hypervolume, kept up
    to date as points arrive, are replaced or leave (the live view's "each trial's latest report").

    Equal to `non_dominated_ranks(F) == 0` and `hypervolume(F)` of the current points at every
    step, without looking at every point: an arriving point is compared with the front only, and
    only the departure of a front point looks at the rest (for the points it alone dominated). The
    hypervolume is recomputed, from the front only, when the front has changed since it was last
    asked for. Points with a NaN are failed trials: they are not kept.
    """

    def __init__(self, reference: Sequence[float] = REFERENCE_POINT) -> None:
        self.reference = np.asarray(reference, dtype=float)
        self._points: dict[Any, np.ndarray] = {}  # every kept point, by key
        self._front: dict[Any, np.ndarray] = {}  # the non-dominated ones
        self._volume: float | None = 0.0  # None: the front changed since it was computed
        self._front_array: np.ndarray | None = None  # `front`, until the front changes
        self._front_array_keys: list = []  # the keys of its rows

    def __len__(self) -> int:
        return len(self._points)

    def __contains__(self, key: Any) -> bool:
        return key in self._points

    @property
    def front(self) -> np.ndarray:
        """The front's points, (f, d), in no particular order (read-only: it is kept until the front changes)."""
        if self._front_array is None:
            self._front_array_keys = list(self._front)
            self._front_array = np.array(list(self._front.values())).reshape(-1, len(self.reference))
            self._front_array.flags.writeable = False
        return self._front_array

    def _front_changed(self) -> None:
        self._volume = self._front_array = None

    @property
    def front_keys(self) -> set:
        return set(self._front)

    @property
    def hypervolume(self) -> float:
        if self._volume is None:
            self._volume = hypervolume(self.front, self.reference)
        return self._volume

    def set(self, key: Any, point: Sequence[float]) -> None:
        """`key`'s point is now `point` (minimisation form); a NaN point removes the key."""
        point = np.asarray(point, dtype=float)
        if point.shape != self.reference.shape:
            raise ValueError(f"expected a point of {len(self.reference)} objectives, got shape {point.shape}")
        old = self._front.get(key)
        improved = old is not None and bool((point <= old).all())
        if improved:
            # A front point moved to one at least as good (a trial's next epoch, often): all it
            # dominated, the new one dominates, and no other front point dominates it. Nothing
            # leaves the rest for the front, so the rest is not looked at (discard would).
            self._points[key] = point
        else:
            self.discard(key)
            if np.isnan(point).any():
                return
            self._points[key] = point
        front = self.front  # compared at once, in one pass: a loop over the front cost most of a report (benchmarks/scale.py)
        sign = np.sign(front - point)  # > 0 where the point is better than a front point, < 0 where worse
        better, worse = (sign > 0).any(axis=1), (sign < 0).any(axis=1)
        if not improved and (worse & ~better).any():  # a front point dominates it
            return
        beaten = [k for k in map(self._front_array_keys.__getitem__, np.flatnonzero(better & ~worse)) if k != key]
        for k in beaten:
            del self._front[k]
        self._front[key] = point
        if old is None or beaten or not np.array_equal(point, old):
            self._front_changed()

    def discard(self, key: Any) -> None:
        """Forget `key`'s point, if any; the points only it dominated may join the front."""
        point = self._points.pop(key, None)
        if point is None or self._front.pop(key, None) is None:
            return
        self._front_changed()
        others = [k for k in self._points if k not in self._front]
        if not others:
            return
        rest = np.array([self._points[k] for k in others])
        freed = np.flatnonzero(np.all(point <= rest, axis=1) & np.any(point < rest, axis=1))
        front = self.front
        if len(front) and len(freed):  # still dominated by a remaining front point: stays off
            freed = freed[~_dominated_by_any(rest[freed], front)]
        if len(freed):  # of those, the ones no other freed point dominates join the front
            joining = freed[non_dominated_ranks(rest[freed]) == 0]
            self._front.update((others[i], rest[i]) for i in joining)
            self._front_changed()


class RankedPoints:
    """Points that only ever arrive (a rung's records), kept sorted into non-dominated layers.

    `ranks` equals `non_dominated_ranks` of the points in arrival order after every `add`, without
    a full sort: the new point's layer is found by binary search (if a member of layer j dominates
    it, so does a member of every layer before j), and only the points it pushes down, and those
    they push down in turn, change layer (each by one). Points must not hold NaN.
    """

    def __init__(self, d: int = len(OBJECTIVES)) -> None:
        self._points = np.empty((16, d))  # grown by doubling; the first `_n` rows are the points
        self._ranks = np.empty(16, dtype=int)
        self._n = 0
        self.layers: list[list[int]] = []  # indices of each layer, rank 0 first
        self.low = np.full(d, np.inf)  # each objective's minimum and maximum so far
        self.high = np.full(d, -np.inf)

    def __len__(self) -> int:
        return self._n

    @property
    def points(self) -> np.ndarray:
        return self._points[: self._n]

    @property
    def ranks(self) -> np.ndarray:
        return self._ranks[: self._n]

    def add(self, point: Sequence[float]) -> int:
        """Insert `point`; returns its index (arrival order)."""
        point = np.asarray(point, dtype=float).reshape(1, -1)
        if np.isnan(point).any():
            raise ValueError("a ranked point must not hold NaN")
        index = self._n
        if index == len(self._ranks):
            self._points = np.vstack([self._points, np.empty_like(self._points)])
            self._ranks = np.concatenate([self._ranks, np.empty_like(self._ranks)])
        self._points[index] = point[0]
        self._n += 1
        self.low, self.high = np.minimum(self.low, point[0]), np.maximum(self.high, point[0])
        low, high = 0, len(self.layers)  # first layer none of whose members dominates the point
        while low < high:
            middle = (low + high) // 2
            if self._dominated(point, self.layers[middle]).any():
                low = middle + 1
            else:
                high = middle
        moving, rank = [index], low
        while moving:
            if rank == len(self.layers):
                self.layers.append([])
            layer = self.layers[rank]
            pushed = [layer[i] for i in np.flatnonzero(self._dominates_any(self._points[moving], layer))]
            if pushed:
                gone = set(pushed)
                self.layers[rank] = [i for i in layer if i not in gone]
            self.layers[rank] += moving
            self._ranks[moving] = rank
            moving, rank = pushed, rank + 1
        return index

    def _dominated(self, point: np.ndarray, members: list[int]) -> np.ndarray:
        """For each member: does it dominate `point` (1, d)?"""
        M = self._points[members]
        return np.all(M <= point, axis=1) & np.any(M < point, axis=1)

    def _dominates_any(self, movers: np.ndarray, members: list[int]) -> np.ndarray:
        """For each member: does any of `movers` (k, d) dominate it?"""
        if not members:
            return np.zeros(0, dtype=bool)
        return _dominated_by_any(self._points[members], movers)


def _dominated_by_any(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each of `points` (n, d): does any of `others` (k, d) dominate it?"""
    no_worse = np.all(others[:, None, :] <= points[None, :, :], axis=2)
    better = np.any(others[:, None, :] < points[None, :, :], axis=2)
    return (no_worse & better).any(axis=0)


def promotion_scores(F: np.ndarray, method: str = "knee", *, weights: Sequence[float] | None = None, ranks: np.ndarray | None = None) -> np.ndarray:
    """The value `promote` orders front trials by, lower first; NaN off the front.

    "knee" and "front": Euclidean distance to the ideal point; "weighted": weighted sum
    (`weights` in `OBJECTIVES` order, ignored otherwise); both on objectives min-max scaled over
    the front (zero range -> 0). `ranks`: `non_dominated_ranks(F)` if the caller has them (the
    sort is the costly part).
    """
    F = _as_matrix(F)
    scores = np.full(len(F), np.nan)
    front = np.flatnonzero((non_dominated_ranks(F) if ranks is None else ranks) == 0)
    if method not in PROMOTION_METHODS:
        raise ValueError(f"unknown promotion method {method!r} (expected one of {', '.join(PROMOTION_METHODS)})")
    if len(front) == 0:
        return scores
    scaled = _scale(F[front])
    scores[front] = scaled @ _weights(weights, F.shape[1]) if method == "weighted" else np.linalg.norm(scaled, axis=1)
    return scores


def promote(F: np.ndarray, method: str = "knee", *, weights: Sequence[float] | None = None, k: int = 1, ranks: np.ndarray | None = None) -> list[int]:
    """Row indices of the trials to promote, best first.

    "knee" and "weighted" promote `k`: front points ordered by `promotion_scores`; if `k` exceeds
    the front, the other successful trials follow by rank (asc), then crowding (desc). "front"
    promotes every front point, in knee order, whatever `k`. Ties go to the lower index. Failed
    trials are never returned, so fewer than `k` may come back. `ranks`: as for `promotion_scores`.
    """
    F = _as_matrix(F)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = non_dominated_ranks(F) if ranks is None else ranks
    front = np.flatnonzero(ranks == 0)
    if len(front) == 0:
        raise ValueError("no successful trial to promote")
    score = promotion_scores(F, method, weights=weights, ranks=ranks)[front]
    ordered = front[np.lexsort((front, score))].tolist()
    if method == "front":
        return ordered
    if k > len(front):
        rest = np.flatnonzero(ranks > 0)
        crowding = crowding_distance(F, ranks)[rest]
        ordered += rest[np.lexsort((rest, -crowding, ranks[rest]))].tolist()
    return ordered[:k]


def _scale(front: np.ndarray) -> np.ndarray:
    low, span = front.min(axis=0), np.ptp(front, axis=0)
    return np.divide(front - low, span, out=np.zeros_like(front), where=span > 0)


def _weights(weights: Sequence[float] | None, d: int) -> np.ndarray:
    if weights is None:
        raise ValueError("method 'weighted' needs weights")
    w = np.asarray(weights, dtype=float)
    if w.shape != (d,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {d} finite non-negative numbers, got {list(weights)}")
    return w


def _domination_matrix(F: np.ndarray) -> np.ndarray:
    """D[i, j] is True when row i dominates row j (no worse everywhere, better somewhere)."""
    n = len(F)
    no_worse = np.ones((n, n), dtype=bool)
    better = np.zeros((n, n), dtype=bool)
    for column in F.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    return no_worse & better


def _valid(F: np.ndarray) -> np.ndarray:
    return ~np.isnan(F).any(axis=1)


def _as_matrix(F: np.ndarray, d: int | None = None) -> np.ndarray:
    F = np.asarray(F, dtype=float)
    if F.ndim == 1 and F.size == 0:
        F = F.reshape(0, d or len(OBJECTIVES))
    if F.ndim != 2 or (d is not None and F.shape[1] != d):
        raise ValueError(f"expected an (n, {d or 'd'}) array of objective values, got shape {F.shape}")
    return F
