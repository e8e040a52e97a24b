"""The search stage: run (or restore) the Tune search, then write trials, history, Pareto front and HV."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import tune

from ..config import Budget, RunSpec, TrialConfig
from ..data.dataset import ImageData
from .. import plots
from ..results import (
    HISTORY_COLUMNS,
    HYPERVOLUME_COLUMNS,
    PARETO_COLUMNS,
    TRIAL_SCHEMA,
    RunPaths,
    write_bytes,
)
from ..search import tuner as tuning
from ..errors import DiskFull
from ..storage import MIN_FREE_BYTES, Location
from ..search.pareto import (
    OBJECTIVES,
    crowding_distance,
    hypervolume_history,
    non_dominated_ranks,
    promote,
    promotion_scores,
    to_minimisation,
)
from ..search.diskwatch import DiskWatch, low_disk
from ..search import study
from ..search.progress import LiveProgress
from ..search.schedulers import StopReasonCallback, make_scheduler
from ..search.space import SearchSpace, load_space
from ..trackers import trial_callbacks
from ..trial import TrialSetup
from .context import StageContext

@dataclass(frozen=True)
class Promotion:
    """Which trials go on to the decoder stage: `knee` (default) or `weighted`, top `k`; or the whole `front`."""

    method: str = "knee"
    weights: tuple[float, float, float] | None = None
    k: int = 1


@dataclass(frozen=True)
class SearchSummary:
    trials: int
    completed: int
    front_size: int
    hypervolume: float
    promoted: tuple[str, ...]


def finished_status(metrics: dict[str, Any]) -> str:
    """How a trial that ended without an error ended."""
    if metrics.get("diverged"):
        return "DIVERGED"
    if metrics.get("epoch", 0) < metrics.get("planned_epochs", 0):
        return "STOPPED"
    return "COMPLETED"


# Statuses whose objectives count: finished trials, and running ones at their latest report (live tables).
SCORED = ("COMPLETED", "STOPPED", "RUNNING")


def param_columns(config: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """`param_<name>` of every hyperparameter, after the budget's epoch cap."""
    return {f"param_{k}": v for k, v in dataclasses.asdict(budget.clamp(TrialConfig.from_dict(config))).items()}


def trial_row(
    trial_id: str,
    status: str,
    metrics: dict[str, Any],
    params: dict[str, Any],
    *,
    checkpoint: str | None,
    error: str | None,
    times: tuple[datetime | None, datetime | None],
    optuna_trial: int | None,
) -> dict[str, Any]:
    """One row of trials.parquet, from a trial's latest report; `times` from `trial_times`."""
    row = {
        "trial_id": trial_id,
        "status": status,
        "epochs": int(metrics.get("epoch", 0)),
        "host": metrics.get("hostname"),
        "node_ip": metrics.get("node_ip"),
        "seconds": metrics.get("time_total_s"),
        "started": times[0],
        "finished": times[1],
        "checkpoint": checkpoint,
        "error": error if error is not None else metrics.get("diverged_reason"),
        "stop_reason": metrics.get("stop_reason"),
        "optuna_trial": optuna_trial,
        **params,
    }
    if status in SCORED:
        row.update({name: metrics.get(name) for name in (*OBJECTIVES, "joint_score")})
    return row


def trial_times(latest: dict[str, Any], epochs: dict[int, dict[str, Any]], finished: bool) -> tuple[datetime | None, datetime | None]:
    """(started, finished) of a trial, from Tune's reports: each report's `timestamp` (Unix time, to the
    second) less its `time_total_s` is when the trial started; the earliest such report counts (a
    trial retried from its checkpoint resumes Tune's clock there, so later reports place the start
    too late). A finished trial finished at its last report; a trial without a report has neither."""
    starts = [r["timestamp"] - r["time_total_s"] for r in (*epochs.values(), latest) if _finite(r.get("timestamp")) and _finite(r.get("time_total_s"))]
    end = latest.get("timestamp") if finished and _finite(latest.get("timestamp")) else None
    return (_utc(min(starts)) if starts else None), (_utc(end) if end is not None else None)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)  # numbers.Real: numpy's too


def _utc(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc)


def history_rows(trial_id: str, epochs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"trial_id": trial_id, **{c: epochs[e].get(c) for c in HISTORY_COLUMNS.names if c not in ("run", "trial_id")}} for e in sorted(epochs)]


def in_report_order(trials: list[dict], history: list[dict]) -> tuple[list[dict], list[dict]]:
    """Trials in the order they finished (running ones last), history by trial and epoch."""
    trials.sort(key=lambda r: (r["finished"] is None, r["finished"] or 0.0, r["trial_id"]))
    history.sort(key=lambda r: (r["trial_id"], r["epoch"]))
    return trials, history


def epoch_records(result: tune.Result, run_dir: Location) -> dict[int, dict[str, Any]]:
    """Each epoch a trial reported, once (the last report wins: retries repeat epochs).

    From Tune's results; an epoch missing there (reported just before the driver was killed, never
    uploaded) comes from the per-epoch history saved in the trial's last checkpoint.
    """
    frame = result.metrics_dataframe
    records: dict[int, dict[str, Any]] = {}
    if frame is not None and len(frame) and "epoch" in frame:
        if "diverged" in frame:
            frame = frame[~frame["diverged"].fillna(False).astype(bool)]
        records = {int(r["epoch"]): r for r in frame.to_dict("records") if r.get("epoch") == r.get("epoch")}  # skips NaN
    if result.checkpoint is not None:
        saved = tuning.checkpoint_history(run_dir.at(result.checkpoint.path))
        records = {**{row["epoch"]: row for row in saved}, **records}
    return records


def collect(grid: tune.ResultGrid, budget: Budget, run_dir: Location, optuna_numbers: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """One row per trial and one per (trial, epoch) of a finished search; an epoch reported twice (retries) counts once."""
    trials, history = [], []
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_id = posixpath.basename(result.path.rstrip("/"))
        epochs = epoch_records(result, run_dir)
        trials.append(
            trial_row(
                trial_id,
                "ERROR" if result.error is not None else finished_status(metrics),
                metrics,
                param_columns(result.config, budget),
                checkpoint=run_dir.at(result.checkpoint.path).relative_to(run_dir) if result.checkpoint else None,
                error=str(result.error).strip().splitlines()[-1] if result.error is not None else None,
                times=trial_times(metrics, epochs, finished=True),
                optuna_trial=optuna_numbers.get(trial_id),
            )
        )
        history += history_rows(trial_id, epochs)
    return in_report_order(trials, history)


def pareto_rows(trials: list[dict], promotion: Promotion | None) -> tuple[list[dict], list[dict], list[str]]:
    """Rank every trial (failed ones get rank -1), mark the front and the promoted (none while the
    search runs: `promotion` None); HV after each finished trial."""
    points = np.array([[r.get(n) if r.get(n) is not None else np.nan for n in OBJECTIVES] for r in trials], dtype=float).reshape(-1, 3)
    F = to_minimisation(points)
    ranks = non_dominated_ranks(F)
    crowding = crowding_distance(F, ranks)
    valid = ~np.isnan(F).any(axis=1)
    method, weights = (promotion.method, promotion.weights) if promotion else ("knee", None)
    promoted_idx = promote(F, promotion.method, weights=promotion.weights, k=promotion.k, ranks=ranks) if promotion and valid.any() else []
    promoted = [trials[i]["trial_id"] for i in promoted_idx]
    order = {i: position for position, i in enumerate(promoted_idx, start=1)}
    scores = promotion_scores(F, method, weights=weights, ranks=ranks)
    rows = [
        {
            "trial_id": r["trial_id"],
            **{name: r.get(name) for name in (*OBJECTIVES, "joint_score")},
            "rank": int(ranks[i]),
            "crowding": float(crowding[i]),
            "on_front": bool(ranks[i] == 0),
            "promoted": r["trial_id"] in promoted,
            "promotion_score": None if np.isnan(scores[i]) else float(scores[i]),
            "promotion_order": order.get(i),
        }
        for i, r in enumerate(trials)
    ]
    finished = [i for i, r in enumerate(trials) if r["status"] != "RUNNING" and r["status"] != "PENDING"]
    hv = hypervolume_history(F[finished])
    hv_rows = [{"completed": k + 1, "trial_id": trials[i]["trial_id"], "hypervolume": float(hv[k])} for k, i in enumerate(finished)]
    return rows, hv_rows, promoted


def write_tables(trials: list[dict], history: list[dict], pareto: list[dict], hv: list[dict], paths: RunPaths) -> None:
    """trials, history, pareto and hypervolume Parquet, each replaced atomically."""
    paths.write_table(trials, TRIAL_SCHEMA, paths.trials)
    paths.write_table(history, HISTORY_COLUMNS, paths.history)
    paths.write_table(pareto, PARETO_COLUMNS, paths.pareto)
    paths.write_table(hv, HYPERVOLUME_COLUMNS, paths.hypervolume)


@dataclass(frozen=True)
class LiveTables:
    """Writes the search's tables from Tune's trials while it runs (called by the live view, throttled).

    A finished trial's rows never change, so they are built once: a write at 1,000 trials rebuilds
    only the running ones (`benchmarks/live_tables.py`)."""

    paths: RunPaths
    budget: Budget
    params: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)  # per trial id: its config never changes
    finished: dict[str, tuple[tuple, dict, list]] = field(default_factory=dict, compare=False)  # per trial id: (its state, its row, its epochs' rows)

    @functools.cached_property
    def trial_numbers(self) -> study.TrialNumbers:
        return study.TrialNumbers(self.paths)

    def __call__(self, trials: list, history: dict[str, dict[int, dict[str, Any]]]) -> None:
        rows, epochs = self.rows(trials, history, self.trial_numbers([trial.trial_id for trial in trials]))
        pareto, hv, _ = pareto_rows(rows, None)
        write_tables(rows, epochs, pareto, hv, self.paths)
        study.sync(self.paths)

    def rows(self, trials: list, history: dict[str, dict[int, dict[str, Any]]], numbers: dict[str, int]) -> tuple[list[dict], list[dict]]:
        """trials.parquet's and history.parquet's rows, in report order."""
        rows, epochs = [], []
        for trial in trials:
            row, reports = self.trial_rows(trial, history.get(trial.trial_id, {}), numbers.get(trial.trial_id))
            rows.append(row)
            epochs += reports
        return in_report_order(rows, epochs)

    def trial_rows(self, trial, reports: dict[int, dict[str, Any]], optuna_trial: int | None) -> tuple[dict, list]:
        """The trial's trials.parquet row and history rows (a finished trial's from the cache)."""
        metrics = dict(trial.last_result or {})
        finished = trial.status in ("TERMINATED", "ERROR")
        state = (trial.status, len(reports), metrics.get("timestamp"), optuna_trial)  # a retried trial is not the same
        if finished and self.finished.get(trial.trial_id, (None,))[0] == state:
            return self.finished[trial.trial_id][1:]
        if trial.trial_id not in self.params:
            self.params[trial.trial_id] = param_columns(trial.config, self.budget)
        if trial.status == "ERROR":
            status = "ERROR"
        elif trial.status == "TERMINATED":
            status = finished_status(metrics)
        else:
            status = "RUNNING" if metrics.get("epoch") else "PENDING"
        row = trial_row(trial.trial_id, status, metrics, self.params[trial.trial_id], checkpoint=None, error=None,
                        times=trial_times(metrics, reports, finished), optuna_trial=optuna_trial)
        built = row, history_rows(trial.trial_id, reports)
        if finished:
            self.finished[trial.trial_id] = (state, *built)
        return built


def copy_promoted(trials: list[dict], promoted: list[str], paths: RunPaths) -> None:
    """Copy promoted checkpoints out of Tune's folder, which keeps only the latest per trial."""
    by_id = {r["trial_id"]: r for r in trials}
    for trial_id in promoted:
        source = paths.dir / by_id[trial_id]["checkpoint"] / tuning.CHECKPOINT_FILE
        write_bytes(source.read_bytes(), paths.classifier_checkpoint(trial_id))


def search_callbacks(
    paths: RunPaths,
    settings: tuning.SearchSettings,
    budget: Budget,
    scheduler: tune.schedulers.TrialScheduler | None,
    trackers: list[tune.Callback] = (),
) -> list[tune.Callback]:
    """The search's own Tune callbacks: live view and tables, disk watch, trackers, stop reasons."""
    callbacks = [LiveProgress(settings.trials, LiveTables(paths, budget)), DiskWatch(paths.dir), *trackers]
    return callbacks + ([StopReasonCallback(scheduler)] if hasattr(scheduler, "stop_reasons") else [])


def search_stage(
    data: ImageData,
    paths: RunPaths,
    *,
    space: SearchSpace,
    settings: tuning.SearchSettings,
    setup: TrialSetup,
    budget: Budget,
    promotion: Promotion,
    scheduler: tune.schedulers.TrialScheduler | None = None,
    trackers: list[tune.Callback] = (),
    say: Callable[[str], None] = print,
) -> SearchSummary:
    callbacks = search_callbacks(paths, settings, budget, scheduler, trackers)
    tuner = tuning.make_tuner(
        data=data,
        setup=setup,
        budget=budget,
        settings=settings,
        param_space=space.to_tune(),
        storage=paths.tune_dir,
        scheduler=scheduler,
        callbacks=callbacks,
        study=(study.study_name(paths), study.storage(paths, fresh=True, writer=True)),
    )
    low_disk.clear()
    try:
        grid = tuning.fit(tuner, settings.trials)
    except KeyboardInterrupt:
        if low_disk.is_set():
            then = f"continue with: regene-search run --resume {paths.dir}"
            paths.dir.check_free_space(then)
            raise DiskFull(f"{paths.dir}: the disk ran under {MIN_FREE_BYTES / 2**20:.0f} MiB free during the search; {then}") from None
        raise
    trials, history = collect(grid, budget, paths.dir, study.trial_numbers(paths))
    study.fail_orphans(paths, {r["trial_id"] for r in trials})
    pareto, hv, promoted = pareto_rows(trials, promotion)
    if promoted:  # before pareto.parquet names them
        copy_promoted(trials, promoted, paths)
    write_tables(trials, history, pareto, hv, paths)
    study.sync(paths)
    plots.save_each(plots.search_figures(paths, trials, history, pareto, hv, promoted), say)
    final_hv = hv[-1]["hypervolume"] if hv else 0.0
    return SearchSummary(
        trials=len(trials),
        completed=sum(r["status"] in ("COMPLETED", "STOPPED") for r in trials),
        front_size=sum(r["on_front"] for r in pareto),
        hypervolume=final_hv if math.isfinite(final_hv) else 0.0,
        promoted=tuple(promoted),
    )


def settings_for(spec: RunSpec, cluster_cpus: float | None) -> tuning.SearchSettings:
    """Concurrency defaults to as many trials as the cluster's CPUs (or GPUs) can hold at once."""
    trials = spec.resolved_trials
    concurrent = spec.max_concurrent
    if concurrent is None:
        concurrent = max(1, int((cluster_cpus or 1) // max(spec.cpus_per_trial, 1e-9)))
    return tuning.SearchSettings(
        trials=trials,
        sampler=spec.sampler,
        max_concurrent=max(1, min(concurrent, trials)),
        cpus_per_trial=spec.cpus_per_trial,
        gpus_per_trial=spec.gpus_per_trial,
        max_failures=spec.max_failures,
        seed=spec.seed,
        startup_trials=spec.startup_trials,
    )


def run_search_stage(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.spec
    budget = spec.resolved_budget
    setup = TrialSetup(probe=budget.probe, seed=spec.seed, hflip=ctx.dataset.hflip)
    summary = search_stage(
        ctx.data,
        ctx.paths,
        space=load_space(Path(spec.space_path)),
        settings=settings_for(spec, ctx.cluster.cpus if ctx.cluster else None),
        setup=setup,
        budget=budget,
        promotion=Promotion(method=spec.promote, weights=spec.promote_weights, k=spec.promote_top),
        scheduler=make_scheduler(spec),
        trackers=trial_callbacks(spec.mlflow, study.study_name(ctx.paths)),
        say=ctx.say,
    )
    ctx.console.print(
        f"search: {summary.completed}/{summary.trials} trials completed, front {summary.front_size}, "
        f"hypervolume {summary.hypervolume:.4f}, promoted {', '.join(summary.promoted) or 'none'}"
    )
    return dataclasses.asdict(summary)
