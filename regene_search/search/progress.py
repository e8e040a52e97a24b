"""How a running search shows itself: a live line on a terminal, a progress line at a steady interval
elsewhere (Slurm .out files, `kubectl logs`, pipes) and in RUN/run.log, and the live tables."""

from __future__ import annotations

import bisect
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import tune
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .. import runlog
from ..results import HISTORY_COLUMNS
from .pareto import MODES, OBJECTIVES, ParetoFront, to_minimisation

# Seconds between progress lines off a terminal (and in run.log), and between rewrites of the live tables.
PROGRESS_SECONDS = float(os.environ.get("REGENE_SEARCH_PROGRESS_SECONDS", "30"))
TABLE_SECONDS = float(os.environ.get("REGENE_SEARCH_TABLE_SECONDS", "10"))
# Seconds between renderings of the live line on a terminal: rich shows 2 frames a second, so a
# line built at every step of a fast search (hundreds a second) would mostly go unseen.
RENDER_SECONDS = 0.5

# What is kept of each report: history.parquet's columns, and Tune's clock (trials' start times).
KEPT = [name for name in HISTORY_COLUMNS.names if name != "run"] + ["time_total_s"]

# Called with Tune's trials and every trial's reports by epoch; writes the live tables.
TablesWriter = Callable[[list, dict[str, dict[int, dict[str, Any]]]], None]


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def scored(result: dict[str, Any]) -> np.ndarray | None:
    """A report's objectives, or None for a diverged or incomplete report."""
    if result.get("diverged") or not all(isinstance(result.get(n), (int, float)) and math.isfinite(result[n]) for n in OBJECTIVES):
        return None
    return np.array([result[n] for n in OBJECTIVES], dtype=float)


def latest_time(epochs: dict[int, dict[str, Any]]) -> float | None:
    """A trial's own clock (Tune's time_total_s) at its latest epoch."""
    seconds = epochs[max(epochs)].get("time_total_s")
    return float(seconds) if isinstance(seconds, (int, float)) else None


def epoch_pace(epochs: dict[int, dict[str, Any]]) -> float | None:
    """Seconds a trial's latest epoch took (its mean epoch when the one before is not known)."""
    last = max(epochs)
    now, before = latest_time(epochs), latest_time({last - 1: epochs[last - 1]}) if last - 1 in epochs else None
    if now is None:
        return None
    return now - before if before is not None else now / last


def sorted_median(values: list[float]) -> float:
    """The median of an already sorted, non-empty list, in O(1)."""
    middle = len(values) // 2
    return float(values[middle]) if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


class LiveProgress(tune.Callback):
    """Done/running/total trials, the best of each objective and the hypervolume over every trial's
    latest report (the rows the live pareto.parquet ranks), elapsed and ETA; writes the live tables.

    The reports' front is kept incrementally (`ParetoFront`): a refresh costs the same with 10 or
    10,000 trials, as the best of each objective is always on the front.
    """

    def __init__(self, total: int, write_tables: TablesWriter | None = None) -> None:
        self.total = total
        self.write_tables = write_tables
        self.started = time.monotonic()
        self.finished: set[str] = set()
        self.running: set[str] = set()  # started, not finished: counted here, not by scanning every trial at every step
        self.front = ParetoFront()  # over each trial's latest scored report, in minimisation form
        self.history: dict[str, dict[int, dict[str, Any]]] = {}
        self.planned: dict[str, int] = {}  # each trial's planned epochs, for the ETA
        self.finished_times: list[float] = []  # sorted, kept as trials end: the ETA's median without a sort per refresh
        self.live: Live | None = None
        self.last_line = self.last_render = -math.inf
        self.next_tables = -math.inf
        self.tables_due = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment state; the live display holds locks.
        return {**self.__dict__, "live": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("total", 0))  # a search saved by an older version lacks the newer fields
        state = dict(state)
        latest = state.pop("latest", {})  # older versions kept every trial's latest point
        self.__dict__.update(state)
        if "finished_times" not in state:
            self.finished_times = sorted(t for t in map(self._own_time, self.finished) if t is not None)
        for trial_id, point in latest.items():
            self.front.set(trial_id, to_minimisation(point.reshape(1, -1))[0])

    def setup(self, **info: Any) -> None:
        self.started = time.monotonic()
        self.last_line = self.last_render = self.next_tables = -math.inf
        if sys.stdout.isatty():
            self.live = Live(self.render(0), console=Console(), refresh_per_second=2, transient=False)
            self.live.start()

    def line(self, running: int) -> str:
        done = len(self.finished)
        elapsed = time.monotonic() - self.started
        eta = self.eta()
        points = to_minimisation(self.front.front)  # back from minimisation form: the same flip
        best = [points[:, i].max() if mode == "max" else points[:, i].min() for i, mode in enumerate(MODES)] if len(points) else []
        hv = self.front.hypervolume
        shown = "  ".join(f"{name} {value:.4f}" for name, value in zip(OBJECTIVES, best)) or "  ".join(f"{name} -" for name in OBJECTIVES)
        return f"search {done}/{self.total} done, {running} running | best: {shown} | HV {hv:.4f} | {clock(elapsed)} elapsed, ETA {clock(eta)}"

    def eta(self) -> float:
        """Seconds left: each running trial's epochs to go at its own last epoch's pace, each trial
        not yet reporting at a finished trial's median time (else a running one's projected time);
        spread over the trials running now, and never sooner than the slowest of them ends. Trials
        differ tenfold in cost per epoch, so done/total of the elapsed time misleads."""
        left, projected = [], []
        for trial_id in self.running:
            epochs = self.history.get(trial_id)
            pace = epoch_pace(epochs) if epochs else None
            planned = self.planned.get(trial_id)
            if pace is not None and planned is not None:
                left.append(max(planned - max(epochs), 0) * pace)
                projected.append(planned * pace)
        typical = sorted_median(self.finished_times) if self.finished_times else float(np.median(projected or [math.inf]))
        waiting = max(self.total - len(self.finished) - len(left), 0)
        if not left and not waiting:
            return 0.0
        work = sum(left) + waiting * typical
        return max(max(left, default=0.0), work / max(len(self.running), 1))

    def render(self, running: int) -> Text:
        return Text(self.line(running))

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict[str, Any], **info: Any) -> None:
        self.running.add(trial.trial_id)
        point = scored(result)
        if point is not None:
            self.front.set(trial.trial_id, to_minimisation(point.reshape(1, -1))[0])
        if isinstance(result.get("planned_epochs"), int):
            self.planned[trial.trial_id] = result["planned_epochs"]
        if isinstance(result.get("epoch"), int) and not result.get("diverged"):
            self.history.setdefault(trial.trial_id, {})[result["epoch"]] = {k: result.get(k) for k in KEPT}
        self.tables_due = True

    def _own_time(self, trial_id: str) -> float | None:
        epochs = self.history.get(trial_id)
        return latest_time(epochs) if epochs else None

    def _finish(self, trial_id: str) -> None:
        if trial_id not in self.finished:
            seconds = self._own_time(trial_id)
            if seconds is not None:
                bisect.insort(self.finished_times, seconds)
        self.finished.add(trial_id)
        self.running.discard(trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial.trial_id)
        if scored(trial.last_result or {}) is None:
            self.front.discard(trial.trial_id)
        self.tables_due = True

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial.trial_id)
        self.front.discard(trial.trial_id)
        self.tables_due = True

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        running = len(self.running)
        if self.live is not None and now - self.last_render >= RENDER_SECONDS:
            self.last_render = now
            self.live.update(self.render(running))
        if now - self.last_line >= PROGRESS_SECONDS:
            self.last_line = now
            self.emit(self.line(running))
        if self.tables_due and now >= self.next_tables and self.write_tables is not None:
            self.tables_due = False
            try:
                self.write_tables(trials, self.history)
            except OSError as exc:  # a view of the search must never stop it; the final tables are written at its end
                self.emit(f"live tables not written this time: {exc}")
            # The driver spends at most ~10 % of its time on them, however many trials there are.
            self.next_tables = time.monotonic() + max(TABLE_SECONDS, 9 * (time.monotonic() - now))

    def emit(self, line: str) -> None:
        """Off a terminal the line goes to stdout; the log gets it either way (never the live frames)."""
        if self.live is None:
            print(line, flush=True)
        log = runlog.current()
        if log is not None:
            log.line(line)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.update(self.render(0))
            self.live.stop()
            self.live = None
            log = runlog.current()
            if log is not None:
                log.line(self.line(0))
        else:
            self.emit(self.line(0))
