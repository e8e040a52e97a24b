"""What one write of the search's live tables costs at 100, 1,000 and 10,000 trials, part by part.

The live view rewrites trials/history/pareto/hypervolume.parquet while the search runs
(`stages/search.py:LiveTables`). At 1,000 trials `scale.py` measured its writes at 44 ms per
trial result, a fifth of Tune's own cost. This script splits one write into its parts, on a real
Optuna journal of N trials tagged with their Tune trial ids (as `RecordedOptunaSearch` tags them)
and synthetic Tune trials that report the MNIST space's epochs:

* numbers, afresh: `study.trial_numbers`, which loads the whole journal (what every write did before)
* numbers, kept:   `study.TrialNumbers` after one new trial, the journal kept open (what a write does now)
* rows, afresh:    every trial's trials and history rows built anew (before)
* rows, kept:      the same with the finished trials' rows kept from the last write (now; here every trial has finished)
* ranks:           `pareto_rows`: non-dominated ranks, crowding, promotion and the hypervolume history
* parquet:         the four files, each written atomically

Before and now are timed in the same loop, alternately, `--repeats` times;
medians and the spread (min-max) are printed.

    python benchmarks/live_tables.py [--trials 100 1000 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, median, table, write_json  # noqa: E402
from scale import synthetic_reports  # noqa: E402

from regene_search.config import BUDGETS  # noqa: E402
from regene_search.results import RunPaths  # noqa: E402
from regene_search.search import study  # noqa: E402
from regene_search.search.pareto import MODES, OBJECTIVES  # noqa: E402
from regene_search.search.space import SPACES_DIR, load_space  # noqa: E402
from regene_search.stages import search as stage  # noqa: E402
from regene_search.storage import Location  # noqa: E402

PARTS = ("numbers, afresh", "numbers, kept", "rows, afresh", "rows, kept", "ranks", "parquet")
BEFORE = ("numbers, afresh", "rows, afresh", "ranks", "parquet")
NOW = ("numbers, kept", "rows, kept", "ranks", "parquet")


def journal_and_trials(paths: RunPaths, trials: int, seed: int) -> tuple[list, dict]:
    """A journal of `trials` finished Optuna trials and the Tune trials they stand for."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACES_DIR / "mnist.toml").to_tune()
    np.random.seed(seed)
    kept = optuna.create_study(study_name=study.study_name(paths), storage=study.storage(paths),
                               directions=["maximize" if m == "max" else "minimize" for m in MODES], sampler=optuna.samplers.RandomSampler(seed=seed))
    tune_trials, history = [], {}
    for i in range(trials):
        config = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in space.items()}
        reports = synthetic_reports(config)
        trial_id = f"t{i:05d}"
        optuna_trial = kept.ask()
        optuna_trial.set_user_attr(study.TRIAL_ID_ATTR, trial_id)
        kept.tell(optuna_trial, [reports[-1][name] for name in OBJECTIVES])
        tune_trials.append(SimpleNamespace(trial_id=trial_id, status="TERMINATED", config=config, last_result={**reports[-1], "time_total_s": float(len(reports))}))
        history[trial_id] = {r["epoch"]: {**r, "time_total_s": float(r["epoch"]), "timestamp": 1.7e9 + i} for r in reports}
    return tune_trials, history


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def one_write(paths: RunPaths, live: stage.LiveTables, kept: study.TrialNumbers, trials: list, history: dict, new_id: str) -> dict[str, float]:
    """One write's parts; the ways before and after this change side by side."""
    seconds = {}
    _, seconds["numbers, afresh"] = timed(study.trial_numbers, paths)
    extra = optuna.load_study(study_name=study.study_name(paths), storage=study.storage(paths)).ask()  # one new trial since the last write
    extra.set_user_attr(study.TRIAL_ID_ATTR, new_id)
    numbers, seconds["numbers, kept"] = timed(kept, [t.trial_id for t in trials] + [new_id])
    _, seconds["rows, afresh"] = timed(stage.LiveTables(paths, live.budget, params=live.params).rows, trials, history, numbers)  # configs were kept before too
    (rows, epochs), seconds["rows, kept"] = timed(live.rows, trials, history, numbers)
    (pareto, hv, _), seconds["ranks"] = timed(stage.pareto_rows, rows, None)
    _, seconds["parquet"] = timed(stage.write_tables, rows, epochs, pareto, hv, paths)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "live_tables.json")
    args = parser.parse_args(argv)
    budget, out = BUDGETS["default"], {"machine": machine(), "runs": []}
    rows = []
    for trials in args.trials:
        with tempfile.TemporaryDirectory(prefix="rs-live-", dir="/tmp") as root:
            paths = RunPaths(Location.of(Path(root) / "run"))
            paths.make()
            tune_trials, history = journal_and_trials(paths, trials, seed=0)
            live, kept = stage.LiveTables(paths, budget), study.TrialNumbers(paths)
            kept([t.trial_id for t in tune_trials])  # the first write's full read
            live.rows(tune_trials, history, kept.known)  # and its rows
            runs = [one_write(paths, live, kept, tune_trials, history, f"new{r}") for r in range(args.repeats)]
        out["runs"].append({"trials": trials, "seconds": runs})
        spread = {p: [r[p] * 1000 for r in runs] for p in PARTS}
        before, after = (sum(median(spread[p]) for p in parts) for parts in (BEFORE, NOW))
        rows.append([f"{trials:,}", *(f"{median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in spread.values()), f"{before:.0f}", f"{after:.0f}"])
        print(f"{trials} trials done", flush=True)
    print("\nOne live-tables write, ms: median (min-max) over", args.repeats, "repeats")
    print(table(rows, ["trials", *PARTS, "write before", "write now"]))
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
