"""What does the driver pay per trial result as a search grows to 100, 1,000 and 10,000 trials?

A real Tune search in an in-process Ray, built exactly as `run` builds it (`search/tuner.py:make_tuner`:
the Optuna searcher on the run's journal, the `--scheduler`, `stages/search.py:search_callbacks`:
live view, live Parquet tables, disk watch, stop reasons, and the Tune-state signer), with one
difference: the trainable reports synthetic objectives at once (no data, no training), so all the
time is the driver's. Each trial reports its planned epochs (1..3, the MNIST space) in a burst.

The project's hooks are timed by wrapping their classes' methods here (nothing in the package is
instrumented); nested calls count once, in the innermost part:

* searcher:  RecordedOptunaSearch.suggest / on_trial_result / on_trial_complete (Optuna's TPE inside)
* scheduler: the scheduler's on_trial_add / on_trial_result / on_trial_complete / choose_trial_to_run
* callbacks: DiskWatch, StopReasonCallback, SignTuneState (every hook)
* live view: LiveProgress's hooks, refreshing the line at every step as on a terminal
             (PROGRESS_SECONDS = 0; the line itself is discarded)
* parquet:   LiveTables (the live trials/history/pareto/hypervolume tables and the journal sync)

Tune's own cost is the driver's wall time of `fit()` per result less all of these.

    python benchmarks/scale.py                                  # 100, 1000, 10000 trials, fifo (run's default)
    python benchmarks/scale.py --trials 100 1000 --schedulers fifo pareto-asha pareto-asha-epsnet
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, local_ray, machine, median, table, write_json  # noqa: E402

from regene_search.config import BUDGETS  # noqa: E402
from regene_search.results import RunPaths  # noqa: E402
from regene_search.search import progress, study  # noqa: E402
from regene_search.search import tuner as tuning  # noqa: E402
from regene_search.search.diskwatch import DiskWatch  # noqa: E402
from regene_search.search.progress import LiveProgress  # noqa: E402
from regene_search.search.schedulers import StopReasonCallback, build_scheduler  # noqa: E402
from regene_search.search.space import SPACES_DIR, load_space  # noqa: E402
from regene_search.search.study import RecordedOptunaSearch  # noqa: E402
from regene_search.signing import SignTuneState  # noqa: E402
from regene_search.stages.search import LiveTables, search_callbacks  # noqa: E402
from regene_search.storage import Location  # noqa: E402

PARTS = ("searcher", "scheduler", "callbacks", "live view", "parquet")
CALLBACK_HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_result", "on_trial_complete",
                  "on_trial_error", "on_checkpoint", "on_experiment_end", "get_state")
SCHEDULER_HOOKS = ("on_trial_add", "on_trial_result", "on_trial_complete", "on_trial_error", "on_trial_remove", "choose_trial_to_run")


def synthetic_trainable(config: dict) -> None:
    """Reports each planned epoch at once: objectives that depend on the configuration (so the
    searcher and the schedulers see structure), improve with epochs, and carry seeded noise."""
    import math as m
    import random

    from ray import tune as t

    rng = random.Random(repr(sorted(config.items())))
    epochs = int(config.get("epochs", 1))
    size = m.log2(config.get("latent_dim", 64)) / 9  # 0.55..1
    lr_fit = abs(m.log10(config.get("lr", 1e-3)) + 2.8)
    for epoch in range(1, epochs + 1):
        accuracy = min(1.0, max(0.0, 0.98 - 0.25 * lr_fit - 0.1 / epoch + 0.02 * rng.gauss(0, 1)))
        mae = min(1.0, max(0.0, 0.25 - 0.15 * size + 0.03 * config.get("dropout", 0.0) + 0.01 * rng.gauss(0, 1)))
        sparsity = min(1.0, max(0.0, 0.2 + 0.5 * size - accuracy / 4 + 0.02 * rng.gauss(0, 1)))
        t.report({"epoch": epoch, "accuracy": accuracy, "decoder_mae": mae, "latent_sparsity": sparsity,
                  "joint_score": accuracy - mae - sparsity, "planned_epochs": epochs, "diverged": False})


class Timers:
    """Exclusive seconds and calls per part: a timed call inside another timed call is charged to
    the inner part only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [part, start, seconds of timed children]

    def wrap(self, cls: type, names: tuple[str, ...], part: str) -> None:
        for name in names:
            original = getattr(cls, name, None)
            if original is None or getattr(original, "_scale_timed", None) == part:
                continue
            setattr(cls, name, self._timed(original, part))

    def _timed(self, function, part: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            frame = [part, time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()
                spent = time.perf_counter() - frame[1]
                self.seconds[part] += spent - frame[2]
                self.calls[part] += 1
                if self.stack:
                    self.stack[-1][2] += spent

        timed._scale_timed = part
        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


TIMERS = Timers()


def instrument(scheduler) -> None:
    TIMERS.wrap(RecordedOptunaSearch, ("suggest", "on_trial_result", "on_trial_complete"), "searcher")
    TIMERS.wrap(type(scheduler), SCHEDULER_HOOKS, "scheduler")
    for cls in (DiskWatch, StopReasonCallback, SignTuneState):
        TIMERS.wrap(cls, CALLBACK_HOOKS, "callbacks")
    TIMERS.wrap(LiveProgress, CALLBACK_HOOKS, "live view")
    TIMERS.wrap(LiveTables, ("__call__",), "parquet")


class ResultCount(tune.Callback):
    def __init__(self) -> None:
        self.results = 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.results += 1


def one_search(trials: int, scheduler_kind: str, seed: int, concurrency: int) -> dict:
    budget = BUDGETS["default"]
    space = load_space(SPACES_DIR / "mnist.toml")
    settings = tuning.SearchSettings(trials=trials, sampler="tpe", max_concurrent=concurrency, cpus_per_trial=2 / concurrency, seed=seed)
    scheduler = build_scheduler(scheduler_kind, budget.max_epochs)
    instrument(scheduler)
    with tempfile.TemporaryDirectory(prefix="rs-scale-", dir="/tmp") as root:
        paths = RunPaths(Location.of(Path(root) / "run"))
        paths.make()
        counter = ResultCount()
        callbacks = [*search_callbacks(paths, settings, budget, scheduler), counter]
        trainable = tune.with_resources(synthetic_trainable, {"cpu": settings.cpus_per_trial})
        with _patched(tuning, "make_trainable", lambda *args: trainable):
            tuner = tuning.make_tuner(
                data=None, setup=None, budget=budget, settings=settings, param_space=space.to_tune(),
                storage=paths.tune_dir, scheduler=scheduler, callbacks=callbacks,
                study=(study.study_name(paths), study.storage(paths, fresh=True)),
            )
        TIMERS.reset()
        start = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - start
        parts = {part: TIMERS.seconds.get(part, 0.0) for part in PARTS}
        calls = {part: TIMERS.calls.get(part, 0) for part in PARTS}
        errors = sum(r.error is not None for r in grid)
        finished = len(grid)
    results = counter.results
    tune_own = wall - sum(parts.values())
    return {
        "trials": trials, "scheduler": scheduler_kind, "seed": seed, "concurrency": concurrency,
        "finished": finished, "errors": errors, "results": results, "fit_wall_seconds": wall,
        "ms_per_result": {"total": 1000 * wall / results, "tune": 1000 * tune_own / results,
                          **{part: 1000 * s / results for part, s in parts.items()}},
        "calls": calls,
        "project_share_of_tune": sum(parts.values()) / tune_own,
    }


@contextlib.contextmanager
def _patched(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def growth_exponent(sizes: list[int], totals: list[float]) -> float | None:
    """k in total seconds ~ trials**k, least squares on logs (k = 1: constant cost per result)."""
    if len(sizes) < 2 or min(totals) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(totals), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--schedulers", nargs="+", default=["fifo"], help="default: fifo, the run command's default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 1], help="searches (seeds) per size, the last repeated (default 3 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2: one per CPU, as run does on 2 CPUs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)

    progress.PROGRESS_SECONDS = 0.0  # the live line at every step, as on a terminal ...
    progress.LiveProgress.emit = lambda self, line: None  # ... but not printed
    out: dict = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": []}
    print(f"load avg {out['machine']['load_average_at_start']}; sizes {args.trials}; schedulers {args.schedulers}", flush=True)
    with local_ray(num_cpus=2):
        for i, trials in enumerate(args.trials):
            for seed in range(args.seeds[min(i, len(args.seeds) - 1)]):
                for kind in args.schedulers:  # interleaved: each seed runs every scheduler
                    run = one_search(trials, kind, seed, args.concurrency)
                    out["runs"].append(run)
                    ms = run["ms_per_result"]
                    print(f"  {trials} trials, {kind}, seed {seed}: {run['results']} results in {run['fit_wall_seconds']:.0f} s; ms/result "
                          + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()) + f"; project/Tune {100 * run['project_share_of_tune']:.1f}%", flush=True)
                    write_json(args.out, out)

    rows, summary = [], {}
    for kind in args.schedulers:
        sizes = sorted({r["trials"] for r in out["runs"] if r["scheduler"] == kind})
        med: dict[int, dict[str, float]] = {}
        for n in sizes:
            runs = [r for r in out["runs"] if r["scheduler"] == kind and r["trials"] == n]
            med[n] = {key: median([r["ms_per_result"][key] for r in runs]) for key in ("total", "tune", *PARTS)}
            share = [100 * r["project_share_of_tune"] for r in runs]
            med[n]["share"], med[n]["share_range"] = median(share), (min(share), max(share))
            med[n]["searches"], med[n]["results"] = len(runs), median([r["results"] for r in runs])
            rows.append([kind, n, med[n]["searches"], f"{med[n]['total']:.2f}", f"{med[n]['tune']:.2f}",
                         *[f"{med[n][p]:.3f}" for p in PARTS], f"{med[n]['share']:.1f}% ({med[n]['share_range'][0]:.1f}-{med[n]['share_range'][1]:.1f})"])
        # Total seconds of each part ~ trials**k (results per trial are the same at every size).
        exponents = {key: growth_exponent(sizes, [med[n][key] * med[n]["results"] for n in sizes]) for key in ("tune", *PARTS)}
        summary[kind] = {"medians": med, "growth_exponents": exponents}
        rows.append([kind, "exponent k", "", "", *[f"{exponents[k]:.2f}" if exponents[k] is not None else "-" for k in ("tune", *PARTS)], ""])
    out["summary"] = summary
    write_json(args.out, out)
    print("\nDriver ms per trial result (medians over searches); exponent k: total seconds ~ trials**k")
    print(table(rows, ["scheduler", "trials", "searches", "total", "Tune", *PARTS, "project / Tune"]))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
