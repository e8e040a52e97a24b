"""How fast could any early stopping reach the target on a table? Oracle stopping rules, replayed.

Issue 12 asks the default to reach random-FIFO's final hypervolume in 1/3 of FIFO's trial-epochs.
This script asks what the best stopping rule that sees one rung could do with the same random
sampler, by replaying (`replay.py`, `search_efficiency.py`'s hypervolume and target) schedulers
that know more than any real one:

* `rung-e<E>-q<Q>`: stops a trial at epoch E unless its configuration's epoch-E joint_score is in
  the top Q of the whole table's at epoch E. A real ASHA estimates that cutoff from the trials it
  has seen so far; this one knows it exactly (no warm-up needed, no early mistakes). Survivors run
  to the end.
* `final-e<E>`: stops a trial at epoch E unless its configuration is on the table's final Pareto
  front (all three objectives at the last epoch): perfect foresight, the floor for random sampling.

Both are analysis devices: they read the trial's recorded configuration (`SimTrial.config_id`),
which no scheduler in a real search has. Printed per rule: the expected trial-epochs one random
draw costs, the median trial-epochs to the target (fraction of the budget) and the seeds that
reach it, beside random-FIFO's.

    python benchmarks/efficiency_bound.py --table benchmarks/data/cifar10_curves.parquet --seeds 100 [--match fresh]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table, write_json  # noqa: E402
from replay import MATCH_RULES, Table, replay  # noqa: E402
from search_efficiency import first_reaching, hypervolume_curve, on_grid  # noqa: E402

from regene_search.search.pareto import OBJECTIVES, non_dominated_ranks, to_minimisation  # noqa: E402
from regene_search.search.tuner import SearchSettings, make_searcher, quiet_tune_output  # noqa: E402

RUNG_EPOCHS = (1, 2, 3, 4)
KEEP_FRACTIONS = (0.05, 0.10, 0.15, 0.25, 0.50)
WORKERS = 2

_TABLE: Table | None = None  # set before the pool forks


class OracleStop(FIFOScheduler):
    """Stops a trial at epoch `rung` unless its recorded configuration is in `keep`."""

    def __init__(self, rung: int, keep: set[int]) -> None:
        super().__init__()
        self.rung, self.keep = rung, keep

    def on_trial_result(self, tune_controller, trial, result):
        if result.get("epoch") == self.rung and trial.config_id not in self.keep:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


def finished(tbl: Table) -> list[int]:
    return [c for c, rs in tbl.results.items() if len(rs) == tbl.epochs and not rs[-1]["diverged"]]


def top_at(tbl: Table, epoch: int, fraction: float) -> set[int]:
    """Configurations whose epoch-`epoch` joint_score is in the table's top `fraction` (at least one)."""
    scored = sorted(finished(tbl), key=lambda c: tbl.results[c][epoch - 1]["joint_score"], reverse=True)
    return set(scored[: max(1, round(fraction * len(scored)))])


def final_front(tbl: Table) -> set[int]:
    ids = finished(tbl)
    points = to_minimisation(np.array([[tbl.results[c][-1][o] for o in OBJECTIVES] for c in ids]))
    return {c for c, rank in zip(ids, non_dominated_ranks(points)) if rank == 0}


def rules(tbl: Table) -> dict[str, tuple[int, set[int]] | None]:
    """Rule name -> (rung epoch, configurations kept), None for random-FIFO."""
    out: dict[str, tuple[int, set[int]] | None] = {"random-fifo": None}
    for epoch in RUNG_EPOCHS:
        for q in KEEP_FRACTIONS:
            out[f"rung-e{epoch}-q{q:.2f}"] = (epoch, top_at(tbl, epoch, q))
    front = final_front(tbl)
    for epoch in (1, 2):
        out[f"final-e{epoch}"] = (epoch, front)
    return out


def run_one(task: tuple[str, int, int, str, int, frozenset]) -> np.ndarray:
    name, seed, trials, match, rung, keep = task
    quiet_tune_output()
    scheduler = FIFOScheduler() if name == "random-fifo" else OracleStop(rung, set(keep))
    searcher = make_searcher(SearchSettings(trials=trials, sampler="random", max_concurrent=WORKERS, seed=seed))
    budget = trials * _TABLE.epochs
    result = replay(_TABLE, searcher, scheduler, workers=WORKERS, trial_epoch_budget=budget, match=match)
    return on_grid(pd.DataFrame({"hypervolume": hypervolume_curve(result.reports)}), budget)


def draw_cost(tbl: Table, rung: int, keep: set[int]) -> float:
    """Expected trial-epochs of one configuration drawn uniformly from the table."""
    ids = finished(tbl)
    return float(np.mean([tbl.epochs if c in keep else rung for c in ids]))


def main(argv: list[str] | None = None) -> int:
    global _TABLE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True, help="a *_curves.parquet of benchmarks/record_curves.py")
    parser.add_argument("--seeds", type=int, default=100, help="seeds 0..N-1 per rule (default 100)")
    parser.add_argument("--trials", type=int, default=24, help="budget = trials x the table's epochs (default 24, as search_efficiency.py)")
    parser.add_argument("--match", choices=MATCH_RULES, default="nearest", help="as search_efficiency.py's (default nearest)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    _TABLE = Table.load(args.table)
    budget = args.trials * _TABLE.epochs
    named = rules(_TABLE)
    tasks = [(name, seed, args.trials, args.match, rule[0] if rule else 0, frozenset(rule[1]) if rule else frozenset())
             for name, rule in named.items() for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        curves = list(pool.map(run_one, tasks, chunksize=4))
    stacks: dict[str, list[np.ndarray]] = {}
    for task, curve in zip(tasks, curves):
        stacks.setdefault(task[0], []).append(curve)
    target = float(np.median([c[-1] for c in stacks["random-fifo"]]))
    rows, summary = [], {}
    for name, rule in named.items():
        need = [first_reaching(c, target) for c in stacks[name]]
        median = float(np.median(need))
        cost = float(_TABLE.epochs) if rule is None else draw_cost(_TABLE, *rule)
        summary[name] = {"kept": None if rule is None else sorted(rule[1]), "trial_epochs_per_draw": cost,
                         "median_trial_epochs_to_target": median, "seeds_reaching_target": int(np.sum(np.isfinite(need))),
                         "median_final_hv": float(np.median([c[-1] for c in stacks[name]]))}
        rows.append([name, "-" if rule is None else str(len(rule[1])), f"{cost:.2f}",
                     f"{median:.0f} = {median / budget:.2f}" if math.isfinite(median) else "not reached",
                     f"{summary[name]['seeds_reaching_target']}/{args.seeds}", f"{summary[name]['median_final_hv']:.4f}"])
    stem = f"efficiency_bound_{args.table.stem}" + ("_fresh" if args.match == "fresh" else "")
    write_json(args.out / f"{stem}.json", {"table": str(args.table), "match": args.match, "seeds": args.seeds, "budget_trial_epochs": budget,
                                          "target_hv": target, "rules": summary, "machine": machine(), "seconds": time.perf_counter() - began})
    print(f"{args.table.name}: budget {budget} trial-epochs, random sampler, {WORKERS} workers, {args.seeds} seeds, match {args.match}; "
          f"target = random-fifo's median final HV {target:.4f}; 1/3 of the budget = {budget / 3:.0f}")
    print(table(rows, ["rule", "configs kept", "trial-epochs per draw", "trial-epochs to target", "seeds reaching", "median final HV"]))
    print(f"\nwrote {args.out / stem}.json  ({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
