"""`--scheduler`: which Tune scheduler decides when to stop a running trial."""

from __future__ import annotations

import bisect
import math

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from ..config import SCHEDULERS, RunSpec
from .pareto_asha import ParetoASHA, WarmUp
from .trial_choice import FIFO, LiveChoice


class RungRecords(dict):
    """A rung's records, trial id -> reward, that keep their non-NaN rewards sorted as they arrive,
    so a percentile of them is read, not computed: Tune's ASHA took `np.nanpercentile` over the
    whole rung at each decision, which grew as n^2 over a search (benchmarks/scale.py)."""

    def __init__(self, records: dict[str, float] | None = None) -> None:
        super().__init__()
        self.sorted: list[float] = []
        for key, value in (records or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: float) -> None:
        old = self.get(key, math.nan)
        if not math.isnan(old):
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        super().__setitem__(key, value)
        if not math.isnan(value):
            bisect.insort(self.sorted, value)

    def __reduce__(self) -> tuple:  # pickled with the scheduler when Tune saves its state: rebuilt from the records
        return type(self), (dict(self),)

    def percentile(self, q: float) -> float:
        """`np.nanpercentile(list(self.values()), q)`, to the last bit (its default, linear method)."""
        values = self.sorted
        if not values:
            return math.nan
        index = (len(values) - 1) * (q / 100)  # numpy's virtual index for the linear method
        if index >= len(values) - 1:
            return values[-1]
        low = math.floor(index)
        a, b, gamma = values[low], values[low + 1], index - low
        return b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma  # numpy's _lerp


class SortedBracket(_Bracket):
    """Tune's ASHA bracket whose rungs are `RungRecords`: the same cutoffs, read from sorted rewards."""

    @classmethod
    def of(cls, bracket: _Bracket) -> SortedBracket:
        sorted_bracket = cls.__new__(cls)
        sorted_bracket.__dict__.update(bracket.__dict__)
        sorted_bracket._rungs = [(milestone, RungRecords(records)) for milestone, records in bracket._rungs]
        return sorted_bracket

    def cutoff(self, recorded: RungRecords) -> float | None:
        return recorded.percentile((1 - 1 / self.rf) * 100) if recorded else None


class LeanASHA(ASHAScheduler):
    """Tune's ASHA, making the same decisions without two costs of its own: each rung keeps its
    rewards sorted (`SortedBracket`), and with one bracket (its default) a new trial just gets it,
    where Tune draws it with np.random.choice (0.1 ms a trial)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._brackets = [SortedBracket.of(bracket) for bracket in self._brackets]

    def on_trial_add(self, tune_controller, trial) -> None:
        if len(self._brackets) == 1 and self._metric and self._metric_op:
            self._trial_info[trial.trial_id] = self._brackets[0]
        else:  # several brackets, or Tune's error for a missing metric
            super().on_trial_add(tune_controller, trial)


class RecordingASHA(LiveChoice, WarmUp, LeanASHA):
    """ASHA on `joint_score` that records, per trial, the rung where it stopped and why, with a
    warm-up (`warmup_trials`, see `WarmUp`)."""

    def __init__(self, *, warmup_trials: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stop_reasons: dict[str, str] = {}
        self.warmup_trials = warmup_trials

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        ended = self._note_end(trial.trial_id, result)  # a stop at the trial's end stands
        if decision == TrialScheduler.STOP and not ended and self._warming_up():
            self._num_stopped -= 1  # still warming up: the rung has its record, the trial goes on
            return TrialScheduler.CONTINUE
        if decision == TrialScheduler.STOP and result.get("epoch", 0) < result.get("planned_epochs", 0):
            self.stop_reasons[trial.trial_id] = (
                f"asha: stopped at epoch {result['epoch']}: joint_score {result['joint_score']:.4f} below the rung cutoff"
            )
        return decision


class StopReasonCallback(tune.Callback):
    """Copies the scheduler's reason for stopping a trial into that trial's result.

    Tune saves a trial's last result with the experiment but not the scheduler's state, so this is
    what keeps the reason of a trial stopped before a driver crash through `Tuner.restore`. Tune
    pickles callbacks and scheduler together, so a restored callback still sees the live scheduler.
    """

    def __init__(self, scheduler: RecordingASHA | ParetoASHA) -> None:
        self.scheduler = scheduler

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        reason = self.scheduler.stop_reasons.get(trial.trial_id)
        if reason is not None:
            result["stop_reason"] = reason  # Tune lets callbacks amend the result in place


def make_scheduler(spec: RunSpec) -> TrialScheduler | None:
    """The run's `--scheduler` with its knobs, rung on `epoch` up to the budget's epochs."""
    return build_scheduler(spec.scheduler, spec.resolved_budget.max_epochs, grace_period=spec.grace_period,
                           reduction_factor=spec.reduction_factor, warmup_trials=spec.warmup_trials)


def build_scheduler(kind: str, max_t: int, *, grace_period: int = 1, reduction_factor: float = 2, warmup_trials: int = 0) -> TrialScheduler:
    """FIFO, ASHA on joint_score, or pareto-asha (crowding or epsilon-net order within a front) on all three objectives.

    The one constructor of each: runs, benchmarks and their tests share it. `grace_period` epochs
    before the first rung, `reduction_factor` between rungs (ASHA's `eta`), and no trial is stopped
    at a rung before `warmup_trials` trials have run to the end.
    """
    rungs = {"max_t": max_t, "grace_period": grace_period, "reduction_factor": reduction_factor, "warmup_trials": warmup_trials}
    if kind == "fifo":
        return FIFO()
    if kind == "asha":
        return RecordingASHA(time_attr="epoch", metric="joint_score", mode="max", **rungs)
    if kind == "pareto-asha":
        return ParetoASHA(**rungs)
    if kind == "pareto-asha-epsnet":
        from .epsnet_asha import EpsNetParetoASHA

        return EpsNetParetoASHA(**rungs)
    raise ValueError(f"unknown scheduler {kind!r}; choose from {', '.join(SCHEDULERS)}")
