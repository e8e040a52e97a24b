"""A compact live view of a running search, replacing Ray Tune's verbose trial table."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from ray import tune
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .pareto import OBJECTIVES, hypervolume, to_minimisation


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class LiveProgress(tune.Callback):
    """Done/running/total trials, best value so far per objective, hypervolume, elapsed and ETA."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()
        self.finished: set[str] = set()
        self.final: dict[str, np.ndarray] = {}
        self.best: dict[str, float] = {}
        self.live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment state; the live display holds locks.
        return {**self.__dict__, "live": None}

    def setup(self, **info: Any) -> None:
        self.started = time.monotonic()
        self.live = Live(self._render(0), console=Console(), refresh_per_second=2, transient=False)
        self.live.start()

    def _render(self, running: int) -> Text:
        done = len(self.finished)
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (self.total - done) if done else math.inf
        points = np.array(list(self.final.values())) if self.final else np.empty((0, 3))
        hv = hypervolume(to_minimisation(points)) if len(points) else 0.0
        best = "  ".join(
            f"{name} {self.best[name]:.4f}" if name in self.best else f"{name} -"
            for name in OBJECTIVES
        )
        return Text.assemble(
            ("search ", "bold"),
            f"{done}/{self.total} done, {running} running  |  best: {best}  |  ",
            (f"HV {hv:.4f}", "cyan"),
            f"  |  {_clock(elapsed)} elapsed, ETA {_clock(eta)}",
        )

    def _update_best(self, result: dict[str, Any]) -> None:
        if result.get("diverged"):
            return
        for name, better in zip(OBJECTIVES, (max, min, min)):
            value = result.get(name)
            if value is not None and math.isfinite(value):
                self.best[name] = better(self.best.get(name, value), value)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict[str, Any], **info: Any) -> None:
        self._update_best(result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.finished.add(trial.trial_id)
        result = trial.last_result or {}
        if not result.get("diverged") and all(name in result for name in OBJECTIVES):
            self.final[trial.trial_id] = np.array([result[name] for name in OBJECTIVES], dtype=float)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.finished.add(trial.trial_id)
        self.final.pop(trial.trial_id, None)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.live is not None:
            running = sum(1 for t in trials if t.status == "RUNNING")
            self.live.update(self._render(running))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.update(self._render(0))
            self.live.stop()
            self.live = None
