"""What does the driver pay per trial result as a search grows to 100, 1,000 and 10,000 trials?

A real Tune search in an in-process Ray, built exactly as `run` builds it (`search/tuner.py:make_tuner`:
the Optuna searcher on the run's journal, the `--scheduler`, `stages/search.py:search_callbacks`:
live view, live Parquet tables, disk watch, stop reasons, and the Tune-state signer), with one
difference: the trainable reports synthetic objectives at once (no data, no training), so all the
time is the driver's. Each trial reports its planned epochs (1..3, the MNIST space) in a burst.

The project's hooks are timed by wrapping their classes' methods here (nothing in the package is
instrumented); nested calls count once, in the innermost part:

* searcher:  RecordedOptunaSearch.suggest / on_trial_result / on_trial_complete (Optuna's sampler and journal inside)
* scheduler: the scheduler's on_trial_add / on_trial_result / on_trial_complete / choose_trial_to_run
* callbacks: DiskWatch, StopReasonCallback, SignTuneState (every hook)
* live view: LiveProgress's hooks, building the line as often as a terminal renders it
             (PROGRESS_SECONDS = RENDER_SECONDS; the line itself is discarded)
* parquet:   LiveTables (the live trials/history/pareto/hypervolume tables and the journal sync)

Tune's own cost is the driver's wall time of `fit()` per result less all of these.

A real search of 10,000 trials is out of reach here (Tune's own cost was 7-18 ms per result on
idle cores and ~0.4 s at load average 12-23, and TPE's suggestion grows with the trials), so the project's hooks are also
replayed without Tune, Ray or the searcher (`replay_hooks`) at 100, 1,000 and 10,000 trials.

    python benchmarks/scale.py      # searches of 100 (3 seeds) and 1,000 trials, the default budget's search; replays to 10,000
    python benchmarks/scale.py --schedulers asha fifo --samplers random tpe   # the default beside the old one (tpe + fifo)
    python benchmarks/scale.py --trials 100 1000 --seeds 3 1 --schedulers fifo pareto-asha --samplers tpe tpe-multivariate
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, local_ray, machine, median, table, write_json  # noqa: E402

from regene_search.config import BUDGETS, SAMPLERS  # noqa: E402
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


def synthetic_reports(config: dict) -> list[dict]:
    """One report per planned epoch: objectives that depend on the configuration (so the searcher
    and the schedulers see structure), improve with epochs, and carry seeded noise."""
    import math as m
    import random

    rng = random.Random(repr(sorted(config.items())))
    epochs = int(config.get("epochs", 1))
    size = m.log2(config.get("latent_dim", 64)) / 9  # 0.55..1
    lr_fit = abs(m.log10(config.get("lr", 1e-3)) + 2.8)
    reports = []
    for epoch in range(1, epochs + 1):
        accuracy = min(1.0, max(0.0, 0.98 - 0.25 * lr_fit - 0.1 / epoch + 0.02 * rng.gauss(0, 1)))
        mae = min(1.0, max(0.0, 0.25 - 0.15 * size + 0.03 * config.get("dropout", 0.0) + 0.01 * rng.gauss(0, 1)))
        sparsity = min(1.0, max(0.0, 0.2 + 0.5 * size - accuracy / 4 + 0.02 * rng.gauss(0, 1)))
        reports.append({"epoch": epoch, "accuracy": accuracy, "decoder_mae": mae, "latent_sparsity": sparsity,
                        "joint_score": accuracy - mae - sparsity, "planned_epochs": epochs, "diverged": False})
    return reports


def synthetic_trainable(config: dict) -> None:
    """Reports each planned epoch at once (cloudpickle ships this and `synthetic_reports` by value)."""
    from ray import tune as t

    for report in synthetic_reports(config):
        t.report(report)


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


SAMPLER_VARIANTS = (*SAMPLERS, "tpe-multivariate")
RUN_SAMPLER = tuning.make_sampler  # before any patching
DEFAULT_SEARCH = BUDGETS["default"]  # its sampler, scheduler and rungs are the run command's defaults


def scheduler_of(kind: str):
    """`build_scheduler` as `run --budget default` builds it: the budget's rungs for the ASHA kinds."""
    return build_scheduler(kind, DEFAULT_SEARCH.max_epochs, grace_period=DEFAULT_SEARCH.grace_period,
                           reduction_factor=DEFAULT_SEARCH.reduction_factor, warmup_trials=DEFAULT_SEARCH.warmup_trials)


def make_sampler(name: str, *, seed: int, trials: int, startup_trials: int | None = None):
    """`tpe-multivariate`: the run's TPE (same start-up trials) sampling all parameters jointly,
    one split of the trials per suggestion instead of one per parameter."""
    import optuna

    sampler = RUN_SAMPLER("tpe", seed=seed, trials=trials, startup_trials=startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sampler._n_startup_trials, multivariate=True)


def one_search(trials: int, scheduler_kind: str, sampler: str, seed: int, concurrency: int, journal_flush: float = study.FLUSH_SECONDS) -> dict:
    budget = DEFAULT_SEARCH
    space = load_space(SPACES_DIR / "mnist.toml")
    run_sampler = "tpe" if sampler == "tpe-multivariate" else sampler
    settings = tuning.SearchSettings(trials=trials, sampler=run_sampler, max_concurrent=concurrency, cpus_per_trial=2 / concurrency, seed=seed)
    scheduler = scheduler_of(scheduler_kind)
    instrument(scheduler)
    with tempfile.TemporaryDirectory(prefix="rs-scale-", dir="/tmp") as root:
        paths = RunPaths(Location.of(Path(root) / "run"))
        paths.make()
        counter = ResultCount()
        callbacks = [*search_callbacks(paths, settings, budget, scheduler), counter]
        trainable = tune.with_resources(synthetic_trainable, {"cpu": settings.cpus_per_trial})
        samplers = make_sampler if sampler == "tpe-multivariate" else RUN_SAMPLER
        with _patched(tuning, "make_trainable", lambda *args: trainable), _patched(tuning, "make_sampler", samplers), \
                _patched(study, "FLUSH_SECONDS", journal_flush):
            tuner = tuning.make_tuner(
                data=None, setup=None, budget=budget, settings=settings, param_space=space.to_tune(),
                storage=paths.tune_dir, scheduler=scheduler, callbacks=callbacks,
                study=(study.study_name(paths), study.storage(paths, fresh=True, writer=True)),  # as stages/search.py
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
        "trials": trials, "scheduler": scheduler_kind, "sampler": sampler, "journal_flush": f"{journal_flush:g} s", "seed": seed, "concurrency": concurrency,
        "finished": finished, "errors": errors, "results": results, "fit_wall_seconds": wall,
        "ms_per_result": {"total": 1000 * wall / results, "tune": 1000 * tune_own / results,
                          **{part: 1000 * s / results for part, s in parts.items()}},
        "calls": calls,
        "project_share_of_tune": sum(parts.values()) / tune_own,
        "own_code_share_of_tune": sum(v for k, v in parts.items() if k != "searcher") / tune_own,  # Optuna's TPE left out
    }


def replay_hooks(trials: int, scheduler_kind: str, seed: int, concurrency: int) -> dict:
    """The project's hooks without Tune, Ray or the searcher, driven as Tune drives them: `concurrency`
    trials report in turn (each result: scheduler, then every callback, then the step's end), a
    finished trial makes room for the next; random configurations. Cheap enough for 10,000 trials,
    where a real search is not (Tune's own cost and TPE's). The live tables are written as in a
    search but their wall-clock throttle would make a per-result figure meaningless here: one
    write at the end, timed, is reported instead."""
    budget = DEFAULT_SEARCH
    space = load_space(SPACES_DIR / "mnist.toml").to_tune()
    settings = tuning.SearchSettings(trials=trials, max_concurrent=concurrency, seed=seed)
    scheduler = scheduler_of(scheduler_kind)
    instrument(scheduler)
    np.random.seed(seed)  # Tune's domains sample from numpy's global generator
    with tempfile.TemporaryDirectory(prefix="rs-scale-", dir="/tmp") as root:
        paths = RunPaths(Location.of(Path(root) / "run"))
        paths.make()
        callbacks = search_callbacks(paths, settings, budget, scheduler)
        live = next(c for c in callbacks if isinstance(c, LiveProgress))
        all_trials, running, started, results, clock = [], [], 0, 0, 1.7e9
        TIMERS.reset()
        for callback in callbacks:
            callback.setup()
        start = time.perf_counter()
        while started < trials or running:
            while len(running) < concurrency and started < trials:
                config = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in space.items()}
                trial = SimpleNamespace(trial_id=f"t{started:05d}", status="RUNNING", config=config, last_result={},
                                        reports=synthetic_reports(config))
                scheduler.on_trial_add(None, trial)
                all_trials.append(trial)
                running.append(trial)
                for callback in callbacks:
                    callback.on_trial_start(iteration=results, trials=all_trials, trial=trial)
                started += 1
            trial = running[0]
            clock += 1.0
            result = {**trial.reports.pop(0), "time_total_s": float(len(trial.last_result) and trial.last_result["time_total_s"] + 1.0),
                      "timestamp": clock, "trial_id": trial.trial_id}
            trial.last_result = result
            decision = scheduler.on_trial_result(None, trial, result)
            for callback in callbacks:
                callback.on_trial_result(iteration=results, trials=all_trials, trial=trial, result=result)
            results += 1
            running.append(running.pop(0))  # the other running trial reports next
            if decision == "STOP" or not trial.reports:
                trial.status = "TERMINATED"
                running.remove(trial)
                scheduler.on_trial_complete(None, trial, result)
                for callback in callbacks:
                    callback.on_trial_complete(iteration=results, trials=all_trials, trial=trial)
            for callback in callbacks:
                callback.on_step_end(iteration=results, trials=all_trials)
        wall = time.perf_counter() - start
        parts = {part: TIMERS.seconds.get(part, 0.0) for part in PARTS}
        writes = TIMERS.calls.get("parquet", 0)
        before = TIMERS.seconds.get("parquet", 0.0)
        live.write_tables(all_trials, live.history)
        final_write = TIMERS.seconds.get("parquet", 0.0) - before
    return {
        "trials": trials, "scheduler": scheduler_kind, "seed": seed, "results": results, "replay_wall_seconds": wall,
        "ms_per_result": {part: 1000 * parts[part] / results for part in ("scheduler", "callbacks", "live view")},
        "live_table_writes": writes, "live_tables_write_seconds_at_end": final_write,
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


def summarise(runs: list[dict], key_of, keys: tuple[str, ...]) -> tuple[dict, list[list[str]]]:
    """Medians per (variant, size) and each part's growth exponent per variant."""
    summary, rows = {}, []
    for variant in sorted({key_of(r) for r in runs}, key=str):
        mine = [r for r in runs if key_of(r) == variant]
        sizes = sorted({r["trials"] for r in mine})
        med: dict[int, dict] = {}
        for n in sizes:
            at = [r for r in mine if r["trials"] == n]
            med[n] = {k: median([r["ms_per_result"][k] for r in at]) for k in keys}
            med[n]["searches"], med[n]["results"] = len(at), median([r["results"] for r in at])
            if "project_share_of_tune" in at[0]:
                for share in ("project_share_of_tune", "own_code_share_of_tune"):
                    values = [100 * r[share] for r in at]
                    med[n][share] = (median(values), min(values), max(values))
        # Total seconds of each part ~ trials**k (results per trial are alike at every size).
        exponents = {k: growth_exponent(sizes, [med[n][k] * med[n]["results"] for n in sizes]) for k in keys if k != "total"}
        summary[" / ".join(variant)] = {"medians": med, "growth_exponents": exponents}
        for n in sizes:
            shares = [f"{med[n][k][0]:.1f}% ({med[n][k][1]:.1f}-{med[n][k][2]:.1f})" for k in ("project_share_of_tune", "own_code_share_of_tune") if k in med[n]]
            rows.append([*variant, n, med[n]["searches"], *[f"{med[n][k]:.3g}" for k in keys], *shares])
        rows.append([*variant, "k", "", *["" if k == "total" else (f"{exponents[k]:.2f}" if exponents[k] is not None else "-") for k in keys]])
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="*", default=[100, 1000], help="real searches of these sizes (default 100 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 1], help="searches (seeds) per size, the last repeated (default 3 1)")
    parser.add_argument("--schedulers", nargs="+", default=[DEFAULT_SEARCH.scheduler],
                        help=f"default: {DEFAULT_SEARCH.scheduler}, the run command's (the default budget's rungs)")
    parser.add_argument("--samplers", nargs="+", default=[DEFAULT_SEARCH.sampler], choices=SAMPLER_VARIANTS,
                        help=f"default: {DEFAULT_SEARCH.sampler}, the run command's")
    parser.add_argument("--replay-trials", type=int, nargs="*", default=[100, 1000, 10000], help="hook replays of these sizes (default 100 1000 10000)")
    parser.add_argument("--replay-schedulers", nargs="+", default=[DEFAULT_SEARCH.scheduler, "fifo", "pareto-asha", "pareto-asha-epsnet"])
    parser.add_argument("--journal-flush", type=float, nargs="+", default=[study.FLUSH_SECONDS],
                        help=f"the driver journal's FLUSH_SECONDS, one search each (default {study.FLUSH_SECONDS:g}; 0: a write per searcher call, as in session 13)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2: one per CPU, as run does on 2 CPUs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--table-only", action="store_true", help="print the tables of an earlier run's --out file, run nothing")
    args = parser.parse_args(argv)
    if args.table_only:
        return print_tables(json.loads(args.out.read_text()), args.out)

    progress.PROGRESS_SECONDS = progress.RENDER_SECONDS  # the live line as often as a terminal renders it ...
    progress.LiveProgress.emit = lambda self, line: None  # ... but not printed
    out: dict = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": [], "replays": []}
    print(f"load avg {out['machine']['load_average_at_start']}; searches {args.trials} x {args.schedulers} x {args.samplers}; replays {args.replay_trials}", flush=True)
    for n in args.replay_trials:
        for kind in args.replay_schedulers:
            r = replay_hooks(n, kind, 0, args.concurrency)
            out["replays"].append(r)
            print(f"  replay {n} trials, {kind}: {r['results']} results; ms/result " + ", ".join(f"{k} {v:.3f}" for k, v in r["ms_per_result"].items())
                  + f"; one live-tables write {r['live_tables_write_seconds_at_end']:.2f} s", flush=True)
            write_json(args.out, out)
    if args.trials:
        with local_ray(num_cpus=2):
            for i, trials in enumerate(args.trials):
                for seed in range(args.seeds[min(i, len(args.seeds) - 1)]):
                    # interleaved: each seed runs every variant
                    for kind, sampler, flush in itertools.product(args.schedulers, args.samplers, args.journal_flush):
                        run = one_search(trials, kind, sampler, seed, args.concurrency, flush)
                        out["runs"].append(run)
                        print(f"  {trials} trials, {kind}, {sampler}, journal flush {flush:g} s, seed {seed}: {run['results']} results in {run['fit_wall_seconds']:.0f} s; ms/result "
                              + ", ".join(f"{k} {v:.2f}" for k, v in run["ms_per_result"].items())
                              + f"; project/Tune {100 * run['project_share_of_tune']:.1f}%", flush=True)
                        write_json(args.out, out)

    return print_tables(out, args.out)


def print_tables(out: dict, path: Path) -> int:
    out["summary"], rows = summarise(out["runs"], lambda r: (r["scheduler"], r["sampler"], r.get("journal_flush", "0 s")), ("total", "tune", *PARTS))
    replay_summary, replay_rows = summarise(out["replays"], lambda r: (r["scheduler"],), ("scheduler", "callbacks", "live view"))
    for row in replay_rows:  # one write of the live tables at the end of each replay (the median, with several)
        writes = [r["live_tables_write_seconds_at_end"] for r in out["replays"] if (r["scheduler"], r["trials"]) == (row[0], row[1])]
        row.append(f"{median(writes):.2f}" if writes else "")
    out["replay_summary"] = replay_summary
    write_json(path, out)
    padded = lambda rows, header: [row + [""] * (len(header) - len(row)) for row in rows]  # noqa: E731
    if rows:
        header = ["scheduler", "sampler", "journal flush", "trials", "searches", "total", "Tune", *PARTS, "project / Tune", "without searcher"]
        print("\nReal searches: driver ms per trial result (medians over searches); k: total seconds ~ trials**k")
        print(table(padded(rows, header), header))
    if replay_rows:
        header = ["scheduler", "trials", "replays", "scheduler", "callbacks", "live view", "tables write s"]
        print("\nHook replays (no Tune, no searcher): ms per result; k: total seconds ~ trials**k; one live-tables write at the end, s")
        print(table(padded(replay_rows, header), header))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
