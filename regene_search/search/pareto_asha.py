"""`pareto-asha`: asynchronous successive halving that promotes by Pareto rank, not one score.

Rungs sit at ``grace_period * reduction_factor**k < max_t`` (in units of `time_attr`, epochs by
default), as in Ray's ASHA. The first time a trial reports at or past a rung it has not yet
passed (the highest rung reached, so a trial that skips a rung is judged only at the later one),
its objective vector is recorded at that rung and a decision is taken at once, among all trials
recorded there so far, itself included:

* the n vectors are put in minimisation form (a maximised x becomes 1 - x) and sorted by
  non-dominated rank (ascending), then crowding distance within the rank (descending, so a
  front's boundary points come first), then arrival order at the rung;
* the trial continues iff ``n < reduction_factor`` (too few trials to rank yet: the first
  arrivals continue) or its position is within the top ``ceil(n / reduction_factor)``.

Decisions are asynchronous and never revised: trials let through early keep running even if
later arrivals would have outranked them. Arrival order therefore matters in two ways only: who
meets the ``n < reduction_factor`` grace, and as the last tie-break between equal (rank,
crowding), where the earlier arrival wins. During the warm-up (`WarmUp`) a trial that would be
stopped continues instead; its decision is logged with ``"warmup": True``. A trial that reports a `diverged` result or a
missing/non-finite objective is stopped at once and is not recorded at any rung, so it neither
counts towards n nor takes a place. A trial reaching `max_t` is stopped as in ASHA.

Why a trial was stopped goes to `stop_reasons` (trial_id -> text, written to trials.parquet by
the search stage); every decision goes to `decisions`. A rung stop of a trial whose result is
already its last planned epoch (`planned_epochs`) is logged in `decisions` but gets no stop
reason, as the trial ended anyway (the `RecordingASHA` convention).
"""

from __future__ import annotations

import itertools
import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from .pareto import MODES, OBJECTIVES, RankedPoints, crowding_distance
from .trial_choice import LiveChoice

NAME = "pareto-asha"


class WarmUp:
    """No trial is stopped at a rung until `warmup_trials` trials have run to the end (`max_t`, or
    their `planned_epochs`); Optuna's pruners call it n_startup_trials. The warm-up trials' results
    are still recorded at the rungs, so the trials after them are judged against them. With W
    workers and W warm-up trials a search starts as FIFO does, instead of stopping its second trial
    on one trial's early result. Mixed into both ASHA schedulers, which set `_time_attr`, `_max_t`."""

    warmup_trials: int = 0  # class default: schedulers pickled before warm-ups existed have none

    def _note_end(self, trial_id: str, result: dict) -> bool:
        """Count the trial as finished if this result is its last; return whether it is."""
        now = result.get(self._time_attr)
        if not isinstance(now, (int, float)):
            return False
        ended = now >= self._max_t or (self._time_attr == "epoch" and _last_planned(result, now))
        if ended:
            self.__dict__.setdefault("_finished", set()).add(trial_id)
        return ended

    def _warming_up(self) -> bool:
        return len(self.__dict__.get("_finished", ())) < self.warmup_trials


class ParetoASHA(LiveChoice, WarmUp, FIFOScheduler):
    """ASHA on all objectives at once: promotion by non-dominated rank, then crowding distance.

    Args:
        time_attr: monotonically increasing result key the rungs are measured in.
        max_t: trials are stopped once `time_attr` reaches it.
        grace_period: the first rung; no trial is stopped by rank before it.
        reduction_factor: about 1 / reduction_factor of the trials at a rung continue.
        warmup_trials: no trial is stopped at a rung until this many trials have run to the end (`WarmUp`).
        objectives: result keys of the objectives.
        modes: "max" or "min" for each objective.
    """

    name = NAME  # leads every stop reason

    def __init__(
        self,
        *,
        time_attr: str = "epoch",
        max_t: float,
        grace_period: float = 1,
        reduction_factor: float = 2,
        warmup_trials: int = 0,
        objectives: Sequence[str] = OBJECTIVES,
        modes: Sequence[str] = MODES,
    ) -> None:
        if not grace_period > 0:
            raise ValueError(f"grace_period must be positive, got {grace_period}")
        if not max_t >= grace_period:
            raise ValueError(f"max_t ({max_t}) must be >= grace_period ({grace_period})")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        if warmup_trials < 0:
            raise ValueError(f"warmup_trials must be >= 0, got {warmup_trials}")
        objectives, modes = tuple(objectives), tuple(modes)
        if not objectives or len(objectives) != len(modes):
            raise ValueError(f"need one mode per objective, got objectives {objectives} and modes {modes}")
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be distinct, got {objectives}")
        if any(mode not in ("min", "max") for mode in modes):
            raise ValueError(f"modes must be 'min' or 'max', got {modes}")
        super().__init__()
        self._time_attr = time_attr
        self._max_t = max_t
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        self.warmup_trials = warmup_trials
        self._objectives = objectives
        self._modes = modes
        self._flip = np.array([mode == "max" for mode in modes])
        # Ascending milestones; each maps trial_id -> objective vector in arrival order.
        milestones = rung_milestones(grace_period, max_t, reduction_factor)
        self._rungs: list[tuple[float, dict[str, tuple[float, ...]]]] = [(m, {}) for m in milestones]
        self._stopped: set[str] = set()
        self._num_stopped = 0
        self.stop_reasons: dict[str, str] = {}
        self.decisions: list[dict[str, Any]] = []

    @property
    def milestones(self) -> list[float]:
        return [milestone for milestone, _ in self._rungs]

    # --- Tune's scheduler interface -----------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """The objectives are fixed at construction; a Tuner's metric/mode is not used."""
        return True

    def on_trial_error(self, tune_controller, trial) -> None:
        pass  # a retried trial resumes with its rung records, so it is not judged twice

    def on_trial_remove(self, tune_controller, trial) -> None:
        pass  # like ASHA, a trial's rung records stay: they are evidence for later arrivals

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        trial_id = trial.trial_id
        if trial_id in self._stopped:
            return TrialScheduler.STOP
        failure = self._failure(result)
        if failure is not None:
            return self._stop_failed(trial_id, result, failure)
        if self._time_attr not in result or any(key not in result for key in self._objectives):
            return TrialScheduler.CONTINUE
        now = result[self._time_attr]
        self._note_end(trial_id, result)
        if now >= self._max_t:
            self._stopped.add(trial_id)
            self._num_stopped += 1
            return TrialScheduler.STOP
        rung = self._pending_rung(trial_id, now)
        if rung is None:
            return TrialScheduler.CONTINUE
        milestone, recorded = rung
        recorded[trial_id] = self._vector(result)
        decision = self._decide(trial_id, milestone, recorded)
        decision["time"] = now
        if not decision["continued"] and self._warming_up():
            decision["continued"] = decision["warmup"] = True
        self.decisions.append(decision)
        if decision["continued"]:
            return TrialScheduler.CONTINUE
        self._stopped.add(trial_id)
        self._num_stopped += 1
        if not (self._time_attr == "epoch" and _last_planned(result, now)):
            self.stop_reasons[trial_id] = (
                f"{self.name}: stopped at rung {self._time_attr} {milestone:g}: position {decision['position']} of "
                f"{decision['n_at_rung']} trials (non-dominated rank {decision['rank']}, crowding "
                f"{decision['crowding']:.4g}; top {decision['n_continue']} continue)"
            )
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        """Record a finished trial's last result at its rung if not yet there (as ASHA does), no decision."""
        if not result or self._failure(result) is not None:
            return
        if self._time_attr not in result or any(key not in result for key in self._objectives):
            return
        rung = self._pending_rung(trial.trial_id, result[self._time_attr])
        if rung is not None:
            rung[1][trial.trial_id] = self._vector(result)

    def debug_string(self) -> str:
        objectives = ", ".join(f"{name} ({mode})" for name, mode in zip(self._objectives, self._modes))
        rungs = " | ".join(f"{self._time_attr} {milestone:g}: {len(recorded)} recorded" for milestone, recorded in self._rungs)
        return f"Using ParetoASHA on {objectives}: num_stopped={self._num_stopped}\nRungs: {rungs or 'none'}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))

    # --- internals ----------------------------------------------------------------------------

    def _pending_rung(self, trial_id: str, now: float) -> tuple[float, dict] | None:
        """The highest rung reached by `now`, if the trial is not yet recorded there."""
        reached = [rung for rung in self._rungs if rung[0] <= now]
        if not reached or trial_id in reached[-1][1]:
            return None
        return reached[-1]

    def _vector(self, result: dict) -> tuple[float, ...]:
        return tuple(float(result[key]) for key in self._objectives)

    def _ranked(self, milestone: float, recorded: dict[str, tuple[float, ...]]) -> RankedPoints:
        """The rung's records in minimisation form, ranked incrementally: a decision costs about
        the same with 10 or 10,000 trials at the rung (a full non-dominated sort is quadratic)."""
        rankings = self.__dict__.setdefault("_rankings", {})  # absent from schedulers pickled by older versions
        ranked = rankings.setdefault(milestone, RankedPoints(len(self._objectives)))
        new = itertools.islice(reversed(recorded.values()), len(recorded) - len(ranked))  # records are never removed
        for vector in reversed(list(new)):  # in arrival order
            ranked.add(np.where(self._flip, 1.0 - np.asarray(vector), vector))  # = pareto.to_minimisation for the defaults
        return ranked

    def _decide(self, trial_id: str, milestone: float, recorded: dict[str, tuple[float, ...]]) -> dict[str, Any]:
        """`trial_id` (the latest record) against every trial recorded at the rung, in the order the
        module docstring gives: its position counts the trials of lower ranks, then those of its own
        rank that come before it by `_within_front_order` and arrival."""
        ranked = self._ranked(milestone, recorded)
        me = len(ranked) - 1  # the trial just recorded
        rank = int(ranked.ranks[me])
        members = np.array(sorted(ranked.layers[rank]))
        F = ranked.points
        layer_crowding = crowding_distance(F[members], np.zeros(len(members), dtype=int))
        mine = int(np.flatnonzero(members == me)[0])
        key = self._within_front_order(F[members], layer_crowding, ranked.low, ranked.high - ranked.low, mine)
        before = (key < key[mine]) | ((key == key[mine]) & (members < me))
        position = sum(len(layer) for layer in ranked.layers[:rank]) + int(before.sum()) + 1
        n = len(ranked)
        n_continue = n if n < self._reduction_factor else math.ceil(n / self._reduction_factor)
        return {
            "trial_id": trial_id,
            "rung": milestone,
            "rank": rank,
            "crowding": float(layer_crowding[mine]),
            "position": position,
            "n_at_rung": n,
            "n_continue": n_continue,
            "continued": position <= n_continue,
            "failure": None,
        }

    def _within_front_order(self, front: np.ndarray, crowding: np.ndarray, low: np.ndarray, span: np.ndarray, me: int) -> np.ndarray:
        """Sort key inside one non-dominated rank (lower first): crowding distance, descending.

        `front` holds the rank's points, `crowding` their crowding distance within it, `low` and
        `span` the minimum and range of each objective over the whole rung; only the keys that
        come before `me`'s (the deciding trial's row) and `me`'s own need be exact."""
        return -crowding

    def _failure(self, result: dict) -> str | None:
        if result.get("diverged"):
            reason = result.get("diverged_reason")
            return f"diverged ({reason})" if reason else "diverged"
        for key in self._objectives:
            if key not in result:
                continue
            try:
                value = float(result[key])
            except (TypeError, ValueError):
                return f"objective {key} is not a number ({result[key]!r})"
            if not math.isfinite(value):
                return f"objective {key} is {value}"
        return None

    def _stop_failed(self, trial_id: str, result: dict, failure: str) -> str:
        now = result.get(self._time_attr)
        where = f" at {self._time_attr} {now:g}" if isinstance(now, (int, float)) else ""
        self.stop_reasons[trial_id] = f"{self.name}: stopped{where}: {failure}"
        self.decisions.append(
            {
                "trial_id": trial_id,
                "rung": None,
                "rank": -1,
                "crowding": float("nan"),
                "position": None,
                "n_at_rung": 0,
                "n_continue": 0,
                "continued": False,
                "time": now,
                "failure": failure,
            }
        )
        self._stopped.add(trial_id)
        self._num_stopped += 1
        return TrialScheduler.STOP


def rung_milestones(grace_period: float, max_t: float, reduction_factor: float) -> list[float]:
    """grace_period * reduction_factor**k for k = 0, 1, ... while below max_t."""
    milestones = []
    k = 0
    while (milestone := grace_period * reduction_factor**k) < max_t:
        milestones.append(milestone)
        k += 1
    return milestones


def _last_planned(result: dict, now: float) -> bool:
    planned = result.get("planned_epochs")
    return isinstance(planned, (int, float)) and now >= planned
