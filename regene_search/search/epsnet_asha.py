"""`pareto-asha` with epsilon-net ordering inside each non-dominated front (after MOASHA).

Syne Tune's MOASHA (Schmucker et al., 2021) ranks a rung by non-dominated sorting and, inside a
front, by an epsilon-net: a greedy order in which each next point is the one farthest from the
points already taken, so the trials let through spread over the whole front. Crowding distance
(ParetoASHA's order) gives every boundary point of a front infinite priority; with three
objectives most points of a small front are boundary points, so crowding barely orders them and
arrival order decides. Here the order is:

* objectives min-max scaled over the trials recorded at the rung (zero range -> 0);
* inside each front, first the point nearest the ideal point (the front's knee, as `promote`
  "knee" picks), then repeatedly the point whose Euclidean distance to the nearest point already
  taken is largest (ties: the earlier arrival).

Everything else (rungs, grace, asynchronous decisions, failures, stop reasons) is ParetoASHA's.
"""

from __future__ import annotations

import numpy as np

from .pareto_asha import ParetoASHA

NAME = "pareto-asha-epsnet"


class EpsNetParetoASHA(ParetoASHA):
    """ParetoASHA whose within-front order is a greedy epsilon-net (farthest point first) from the knee."""

    name = NAME

    def _within_front_order(self, front: np.ndarray, crowding: np.ndarray, low: np.ndarray, span: np.ndarray, me: int) -> np.ndarray:
        return epsilon_net_positions(np.divide(front - low, span, out=np.zeros_like(front), where=span > 0), until=me)


def epsilon_net_positions(points: np.ndarray, until: int | None = None) -> np.ndarray:
    """Position of each point (0 = first) in the greedy farthest-point order started at the point
    nearest the origin (the ideal point in scaled minimisation form); ties go to the lower index.

    With `until`, the order stops once that point is placed (a decision needs no more): the
    points not yet placed get position inf."""
    n = len(points)
    positions = np.full(n, np.inf)
    first = int(np.argmin(np.linalg.norm(points, axis=1)))
    taken = np.zeros(n, dtype=bool)
    taken[first], positions[first] = True, 0
    nearest = np.linalg.norm(points - points[first], axis=1)
    for position in range(1, n):
        if until is not None and taken[until]:
            break
        candidates = np.where(taken, -np.inf, nearest)
        chosen = int(np.argmax(candidates))  # first maximum = lowest index
        taken[chosen], positions[chosen] = True, position
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen], axis=1))
    return positions
