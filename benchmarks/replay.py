"""Replay a whole Ray Tune search against a table of recorded learning curves, in simulated time.

The searcher and the scheduler are the real objects (e.g. `make_searcher`'s ConcurrencyLimiter
around OptunaSearch, Tune's FIFOScheduler, `RecordingASHA`, `ParetoASHA`), driven through Tune's
own interfaces in the order Tune's `TuneController` calls them:

* start: ``searcher.set_search_properties(None, None, param_space)`` and
  ``scheduler.set_search_properties(None, None)``, as ``tune.Tuner`` does;
* whenever a worker is free: while no trial is pending, ``searcher.suggest(trial_id)`` (None =
  the ConcurrencyLimiter is full) makes a PENDING trial and ``scheduler.on_trial_add``; then
  ``scheduler.choose_trial_to_run(controller)`` picks the PENDING or PAUSED trial to start (Tune
  keeps at most one pending trial for a searcher; a paused trial resumes at its next epoch);
* every recorded epoch is a result: ``scheduler.on_trial_result`` -> CONTINUE / PAUSE / STOP;
  unless STOP, ``searcher.on_trial_result``; on STOP, or CONTINUE on the trial's last recorded
  result (the trainable returns), ``scheduler.on_trial_complete`` and
  ``searcher.on_trial_complete`` with that last result; on PAUSE the worker is freed.

Time: W workers, each running one trial at a time; an epoch takes the table's per-epoch cost
(`cpu_seconds` by default, or the wall `seconds` differenced), so results arrive in simulated
time order (ties: the earlier-scheduled event first). Tune's own overheads are not modelled.
The search ends after `max_trials` trials have finished or `trial_epoch_budget` results have
been reported (a Tune `Stopper.stop_all`; the result that meets the budget is still processed).

Nearest-configuration rule (a suggestion the table does not hold): the recorded configuration
minimising the sum over the space's searched parameters of a per-parameter distance in [0, 1]:
`choice` -> 0 if equal else 1 (numeric choices too: they are categories to the searchers);
`uniform` / `randint` -> |a - b| / (high - low); `loguniform` -> |log a - log b| / log(high / low).
Ties go to the lowest config_id. Fixed parameters are not compared (the table holds one value).
With `match="fresh"` the configurations this search has already run are left out (until every
one has been): each new trial is a configuration not seen before, as a draw from a continuous
space would be, instead of a repeat of a recorded curve. On a table of 96, a search of ~90 short
trials under "nearest" runs only ~55 distinct configurations and repeats the rest, which charges
the methods that try more trials for the table's size, not for their decisions. "fresh" has the
opposite bias: the later suggestions of a model-based searcher land further from what it asked for.
The trial then reports that configuration's recorded epochs, exactly as a real trainable reading
the table would (see `Table.reports`); a configuration recorded as diverged reports its recorded
epochs and then the trainable's diverged result (`tuner.DIVERGED_METRICS`, no `epoch`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from regene_search.search.pareto import OBJECTIVES
from regene_search.search.space import SPACES_DIR, SearchSpace, load_space
from regene_search.search.tuner import DIVERGED_METRICS

PENDING, RUNNING, PAUSED, TERMINATED = Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED
REPORTED = ("epoch", *OBJECTIVES, "joint_score", "train_seconds", "probe_seconds")  # what run_trial reports per epoch
COSTS = ("cpu_seconds", "seconds")
MATCH_RULES = ("nearest", "fresh")  # how a suggestion finds its recorded configuration (module docstring)


@dataclass
class Table:
    """Recorded curves (benchmarks/record_curves.py layout): per configuration its parameters, the
    results a trainable would report, and each epoch's cost in seconds."""

    dataset: str
    epochs: int
    configs: pd.DataFrame  # one row per configuration, index config_id, columns param_<name>, status
    results: dict[int, list[dict[str, Any]]]
    costs: dict[int, np.ndarray]
    path: str = ""

    @classmethod
    def load(cls, path: Path | str, cost: str = "cpu_seconds") -> Table:
        """Read `<name>_curves.parquet` and, if beside it, `<name>_configs.parquet` (configurations
        that diverged in epoch 1 are only there)."""
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
        path = Path(path)
        curves = pd.read_parquet(path).sort_values(["config_id", "epoch"])
        if curves.empty:
            raise ValueError(f"{path}: no recorded epochs")
        params = [c for c in curves.columns if c.startswith("param_")]
        configs = curves.groupby("config_id")[[*params, "status"]].first()
        status_path = path.with_name(path.name.replace("_curves", "_configs"))
        if status_path != path and status_path.exists():
            extra = pd.read_parquet(status_path).set_index("config_id")
            extra = extra[~extra.index.isin(configs.index) & (extra["status"] == "diverged")]
            configs = pd.concat([configs, extra[[*params, "status"]]]).sort_index()
        epochs = int(curves["param_epochs"].max()) if "param_epochs" in curves else int(curves["epoch"].max())
        typical = float(np.median(_epoch_costs(curves, cost)))
        results, costs = {}, {}
        by_config = dict(list(curves.groupby("config_id")))
        for config_id, status in configs["status"].items():
            rows = by_config.get(config_id, curves.iloc[:0])
            reported = [{k: _plain(r[k]) for k in REPORTED} | {"planned_epochs": epochs, "diverged": False} for r in rows.to_dict("records")]
            spent = _epoch_costs(rows, cost) if len(rows) else np.empty(0)
            if status == "diverged":
                reported.append({**DIVERGED_METRICS, "planned_epochs": epochs, "diverged": True, "diverged_reason": "recorded as diverged"})
                spent = np.append(spent, spent.mean() if len(spent) else typical)  # its last epoch's cost is unknown
            elif len(rows) < epochs:
                raise ValueError(f"{path}: config {config_id} has {len(rows)} of {epochs} epochs and is not marked diverged")
            results[int(config_id)], costs[int(config_id)] = reported, spent
        dataset = str(curves["dataset"].iloc[0]) if "dataset" in curves else ""
        return cls(dataset=dataset, epochs=epochs, configs=configs, results=results, costs=costs, path=str(path))

    def space(self) -> SearchSpace:
        """The packaged space the table was drawn from, its epochs fixed to the recorded epochs."""
        return searched_space(load_space(SPACES_DIR / f"{self.dataset}.toml"), self.epochs)

    def nearest(self, config: Mapping[str, Any], space: SearchSpace, exclude: frozenset[int] | set[int] = frozenset()) -> int:
        """config_id of the recorded configuration nearest to `config` (rule in the module docstring),
        leaving out the ids in `exclude` unless that would leave none."""
        distance = np.zeros(len(self.configs))
        for name, domain in space.params.items():
            column = self.configs[f"param_{name}"]
            value = config[name]
            if domain.kind == "choice":
                distance += (column.to_numpy() != value).astype(float)
            elif domain.kind == "loguniform":
                distance += np.abs(np.log(column.to_numpy(float)) - math.log(value)) / math.log(domain.high / domain.low)
            else:
                distance += np.abs(column.to_numpy(float) - value) / (domain.high - domain.low)
        if exclude and len(exclude) < len(self.configs):
            distance[self.configs.index.isin(list(exclude))] = np.inf
        return int(self.configs.index[int(np.argmin(distance))])  # argmin: first = lowest config_id

    def reports(self, config_id: int) -> list[dict[str, Any]]:
        """What the project's trainable reports for this configuration, epoch by epoch (copies)."""
        return [dict(r) for r in self.results[config_id]]


def searched_space(space: SearchSpace, epochs: int) -> SearchSpace:
    """`space` with `epochs` fixed (a table's configurations all ran the same number of epochs)."""
    params = {name: domain for name, domain in space.params.items() if name != "epochs"}
    return SearchSpace(path=space.path, params=params, fixed={**space.fixed, "epochs": epochs}, description=space.description)


def param_space(space: SearchSpace) -> dict[str, Any]:
    """Tune's `param_space` for the same space (what a Tuner hands the searcher)."""
    return space.to_tune()


@dataclass
class SimTrial:
    """The parts of a Tune `Trial` that searchers and schedulers read."""

    trial_id: str
    index: int
    config: dict[str, Any]
    config_id: int
    status: str = PENDING
    reported: int = 0
    last_result: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    ended: float | None = None
    end: str = ""  # stopped (by the scheduler) | finished | diverged | paused | cut (the search ended first)


class SimController:
    """Stands in for Tune's TuneController where schedulers look at it (`choose_trial_to_run`: Tune's
    FIFO reads every trial, the project's `LiveChoice` the live ones)."""

    def __init__(self) -> None:
        self.trials: list[SimTrial] = []

    def get_trials(self) -> list[SimTrial]:
        return self.trials

    def get_live_trials(self) -> list[SimTrial]:
        return [t for t in self.trials if t.status != TERMINATED]


@dataclass
class Replay:
    """One replayed search: every reported result (arrival order) and every trial."""

    reports: list[dict[str, Any]]
    trials: list[SimTrial]
    seconds: float  # simulated wall-clock when the search ended


def replay(
    table: Table,
    searcher: Searcher,
    scheduler: TrialScheduler,
    *,
    workers: int,
    space: SearchSpace | None = None,
    max_trials: int | None = None,
    trial_epoch_budget: int | None = None,
    match: str = "nearest",
) -> Replay:
    """Run one search against `table` on `workers` simulated workers (module docstring)."""
    if max_trials is None and trial_epoch_budget is None:
        raise ValueError("give max_trials or trial_epoch_budget (or both)")
    if match not in MATCH_RULES:
        raise ValueError(f"match must be one of {MATCH_RULES}, got {match!r}")
    space = space or table.space()
    searcher.set_search_properties(None, None, param_space(space))
    scheduler.set_search_properties(None, None)
    controller = SimController()
    events: list[tuple[float, int, SimTrial]] = []  # (time the trial's next result arrives, seq, trial)
    reports: list[dict[str, Any]] = []
    clock, seq, running, suggested = 0.0, 0, 0, 0

    def schedule(trial: SimTrial) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (clock + float(table.costs[trial.config_id][trial.reported]), seq, trial))

    def fill() -> None:
        nonlocal running, suggested
        while running < workers:
            pending = any(t.status == PENDING for t in controller.trials)
            if not pending and (max_trials is None or suggested < max_trials):
                trial_id = f"{suggested:05d}"
                suggestion = searcher.suggest(trial_id)
                if suggestion is Searcher.FINISHED:
                    suggested = max_trials or 0
                elif suggestion is not None:
                    config = {**space.fixed, **suggestion}
                    used = {t.config_id for t in controller.trials} if match == "fresh" else frozenset()
                    trial = SimTrial(trial_id, suggested, config, table.nearest(config, space, used))
                    suggested += 1
                    controller.trials.append(trial)
                    scheduler.on_trial_add(controller, trial)
            chosen = scheduler.choose_trial_to_run(controller)
            if chosen is None:
                return
            chosen.status, running = RUNNING, running + 1
            if chosen.started is None:
                chosen.started = clock
            schedule(chosen)

    def complete(trial: SimTrial, how: str) -> None:
        nonlocal running
        scheduler.on_trial_complete(controller, trial, trial.last_result)
        searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        trial.status, trial.ended, trial.end, running = TERMINATED, clock, how, running - 1

    fill()
    while events:
        clock, _, trial = heapq.heappop(events)
        result = table.results[trial.config_id][trial.reported]
        trial.reported += 1
        result = {**result, "trial_id": trial.trial_id, "training_iteration": trial.reported}
        trial.last_result = result
        decision = scheduler.on_trial_result(controller, trial, result)
        if decision != TrialScheduler.STOP:
            searcher.on_trial_result(trial.trial_id, result)
        reports.append({"trial_id": trial.trial_id, "trial": trial.index, "config_id": trial.config_id, "time": clock,
                        "trial_epochs": len(reports) + 1, "decision": decision,
                        **{k: result.get(k) for k in ("epoch", *OBJECTIVES, "joint_score", "diverged")}})
        if decision == TrialScheduler.STOP:
            complete(trial, "diverged" if result["diverged"] else "stopped" if trial.reported < table.epochs else "finished")
        elif trial.reported == len(table.results[trial.config_id]):
            complete(trial, "diverged" if result["diverged"] else "finished")  # the trainable returned after its last report
        elif decision == TrialScheduler.PAUSE:
            trial.status, trial.end, running = PAUSED, "paused", running - 1
        else:
            schedule(trial)
        if trial_epoch_budget is not None and len(reports) >= trial_epoch_budget:
            break
        fill()
    for trial in controller.trials:
        if trial.status in (RUNNING, PENDING, PAUSED):
            trial.end = trial.end or "cut"
    return Replay(reports=reports, trials=controller.trials, seconds=clock)


def _epoch_costs(rows: pd.DataFrame, cost: str) -> np.ndarray:
    if cost == "cpu_seconds":
        return rows["cpu_seconds"].to_numpy(float)
    # `seconds` is cumulative wall time since the trial started; difference it per configuration
    return rows.groupby("config_id")["seconds"].diff().fillna(rows["seconds"]).to_numpy(float)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
