"""Search efficiency on a table of recorded learning curves: every method, N seeds, replayed.

Each (method, seed, workers) search is replayed by `benchmarks/replay.py` against the table
(`benchmarks/record_curves.py` records them): the real searchers (`search/tuner.py:make_searcher`,
i.e. OptunaSearch with the project's sampler behind a ConcurrencyLimiter of `workers`) and the
real schedulers (Tune's FIFO, `RecordingASHA` on joint_score, `ParetoASHA`), in simulated time.

| method | sampler | scheduler |
|---|---|---|
| random-fifo, tpe-fifo, nsga2-fifo | `make_sampler(random / tpe / nsga2)` | FIFO |
| random-asha, tpe-asha | random / tpe | `RecordingASHA`, joint_score, grace 1, rf 2, max_t = the table's epochs |
| random-pareto-asha, tpe-pareto-asha | random / tpe | `ParetoASHA`, grace 1, rf 2, max_t = the table's epochs |
| random-epsnet-asha, tpe-epsnet-asha | random / tpe | `EpsNetParetoASHA` (a variant: epsilon-net order inside fronts), same rungs |
| any of the ASHA ones + `-g<grace>`, `-r<rf>`, `-w<warm-up>` | | other rungs, e.g. `random-asha-g2-r4-w2`: first rung at epoch 2, rf 4, no stop until 2 trials ran whole |

Every search gets the same budget of trial-epochs, `--trials` x the table's epochs (FIFO runs
`--trials` trials; the early-stopping methods as many as fit); the sampler is built for
`--trials` trials (TPE start-up, NSGA-II population), as `run --trials` would. Hypervolume is
`search/pareto.py:hypervolume` (minimisation form, reference (1, 1, 1)) of each trial's latest
reported point -- what the pareto stage ranks -- after every reported epoch.

Printed: per method, hypervolume at a few fractions of the budget with 2 workers (median [IQR]
over seeds); trial-epochs to reach TARGET = the median over seeds of random-FIFO's final
hypervolume (2 workers; median over seeds, a seed that never reaches it counts as infinite);
the worst gap of the method's median curve below random-FIFO's median curve at any budget, and
the worst paired gap: the median over seeds of (random-FIFO - method) on the same sampler seed, whose
noise is far smaller (the noise-floor row, random-FIFO on other seeds, shows the unpaired noise);
simulated wall-clock of the whole budget and to reach TARGET with 2 and 16 workers (medians).
Then, from the table alone, the Spearman correlation of each objective at each epoch with its
value at the last epoch, over the recorded configurations (how far an early rung can be trusted).

    python benchmarks/search_efficiency.py --table benchmarks/data/cifar10_curves.parquet --seeds 20
    python benchmarks/search_efficiency.py --table benchmarks/data/mnist_curves.parquet --seeds 3 --methods random-fifo tpe-pareto-asha

`--match fresh` gives each suggestion the nearest recorded configuration this search has not run
yet (replay.py's docstring says why both rules are worth reading); its outputs end in `_fresh`.

Writes to --out (default benchmarks/results), named after the table: search_efficiency_<table>.parquet
(one row per reported epoch: method, seed, workers, trial_epochs, time, hypervolume, trial,
config_id, epoch, decision), .png (hypervolume curves and the rank agreement), .json (summary).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table, write_json  # noqa: E402
from replay import MATCH_RULES, Table, replay  # noqa: E402

from regene_search.config import SAMPLERS  # noqa: E402
from regene_search.search.pareto import OBJECTIVES, REFERENCE_POINT, hypervolume, to_minimisation  # noqa: E402
from regene_search.search.schedulers import build_scheduler  # noqa: E402
from regene_search.search.tuner import SearchSettings, make_searcher, quiet_tune_output  # noqa: E402

# Method names: "<sampler>-<scheduler>", ASHA's rungs at grace 1, rf 2, no warm-up, unless "-g<grace>",
# "-r<rf>", "-w<warm-up trials>" follow (random-asha-g3-r3: first rung at epoch 3, 1 in 3 go on).
SCHEDULER_KINDS = ("fifo", "asha", "pareto-asha", "epsnet-asha")
METHODS = [
    "random-fifo", "tpe-fifo", "nsga2-fifo",
    "random-asha", "tpe-asha", "random-pareto-asha", "tpe-pareto-asha",
    "random-epsnet-asha", "tpe-epsnet-asha",  # variants designed to win (regene_search/search/epsnet_asha.py)
    # ... and rungs set from the CIFAR-10 table's rank agreement: first rung at epoch 2, 1 in 4 go on,
    # 2 trials run whole before any stop (the warm-up alone, the rungs alone, both; with TPE and epsnet)
    "random-asha-g1-r2-w2", "random-asha-g2-r4", "random-asha-g2-r4-w2", "tpe-asha-g2-r4-w2", "random-epsnet-asha-g2-r4-w2",
    # ... and 1 in 10 past the rung, the keep share an oracle with exact cutoffs finds best (efficiency_bound.py): the default
    "random-asha-g2-r10-w2",
]
BASELINE = "random-fifo"
COLOURS = {"random-fifo": "black", "tpe-fifo": "tab:blue", "nsga2-fifo": "tab:purple", "random-asha": "tab:olive",
           "tpe-asha": "tab:orange", "random-pareto-asha": "tab:cyan", "tpe-pareto-asha": "tab:green",
           "random-epsnet-asha": "tab:pink", "tpe-epsnet-asha": "tab:red"}


@dataclass(frozen=True)
class Method:
    """One compared method, parsed from its name."""

    name: str
    sampler: str
    scheduler: str
    grace_period: int = 1
    reduction_factor: float = 2.0
    warmup_trials: int = 0

    @classmethod
    def parse(cls, name: str) -> Method:
        match = re.fullmatch(r"(\w+?)-([a-z-]+?)(?:-g(\d+))?(?:-r(\d+(?:\.\d+)?))?(?:-w(\d+))?", name)
        if not match or match[1] not in SAMPLERS or match[2] not in SCHEDULER_KINDS:
            raise argparse.ArgumentTypeError(f"method {name!r}: expected <{'|'.join(SAMPLERS)}>-<{'|'.join(SCHEDULER_KINDS)}>[-g<grace>][-r<rf>][-w<warm-up>]")
        if match[2] == "fifo" and (match[3] or match[4] or match[5]):
            raise argparse.ArgumentTypeError(f"method {name!r}: FIFO has no rungs")
        return cls(name, match[1], match[2], int(match[3] or 1), float(match[4] or 2), int(match[5] or 0))

    def scheduler_for(self, max_t: int):
        """`build_scheduler` (what runs use) under this benchmark's names, with max_t = the table's epochs."""
        kind = {"epsnet-asha": "pareto-asha-epsnet"}.get(self.scheduler, self.scheduler)
        return build_scheduler(kind, max_t, grace_period=self.grace_period, reduction_factor=self.reduction_factor,
                               warmup_trials=self.warmup_trials)


def colour(method: str, methods: list[str]) -> str:
    if method in COLOURS:
        return COLOURS[method]
    if method.startswith(f"{BASELINE},"):  # the noise floor
        return "grey"
    import matplotlib

    others = [m for m in methods if m not in COLOURS]  # the variants: Dark2's 8 colours, none of tab10's above
    return matplotlib.colormaps["Dark2"](others.index(method) % 8)


FRACTIONS = (1 / 8, 1 / 4, 1 / 3, 1 / 2, 1)
CURVE_WORKERS = 2  # the hypervolume-vs-trial-epochs figures come from the 2-worker replays

_TABLE: Table | None = None  # set before the process pool forks, so workers share it


def hypervolume_curve(reports: list[dict]) -> np.ndarray:
    """Hypervolume of each trial's latest point after every report.

    Recomputed only when it can change: a point weakly dominated by another trial's latest point
    adds nothing, so if both the replaced point and its replacement are, the volume stays."""
    latest: dict[int, np.ndarray] = {}
    values = np.zeros(len(reports))
    volume = 0.0
    reference = np.asarray(REFERENCE_POINT)
    for k, r in enumerate(reports):
        bad = r["diverged"] or any(r[o] is None or not math.isfinite(r[o]) for o in OBJECTIVES)
        point = np.full(len(OBJECTIVES), np.nan) if bad else to_minimisation(np.array([[r[o] for o in OBJECTIVES]]))[0]
        old = latest.get(r["trial"])
        others = np.array([p for t, p in latest.items() if t != r["trial"]]).reshape(-1, len(OBJECTIVES))
        latest[r["trial"]] = point
        if _matters(point, others, reference) or (old is not None and _matters(old, others, reference)):
            volume = hypervolume(np.array(list(latest.values())))
        values[k] = volume
    return values


def _matters(point: np.ndarray, others: np.ndarray, reference: np.ndarray) -> bool:
    if np.isnan(point).any() or not np.all(point < reference):
        return False
    return not np.any(np.all(others <= point, axis=1))


def noise_floor_label(n_seeds: int) -> str:
    """The baseline again on the next seeds (N..2N-1): how far below itself its median curve falls by chance."""
    return f"{BASELINE}, seeds {n_seeds}-{2 * n_seeds - 1}"


def run_one(task: tuple[str, int, int, int, str, int]) -> pd.DataFrame:
    """One replayed search -> its reports with the hypervolume after each. `seed_offset` shifts the
    sampler's seed (the noise-floor rows); the row keeps the unshifted seed index."""
    method, seed, workers, trials, match, seed_offset = task
    spec = Method.parse(method)
    quiet_tune_output()
    searcher = make_searcher(SearchSettings(trials=trials, sampler=spec.sampler, max_concurrent=workers, seed=seed + seed_offset))
    result = replay(_TABLE, searcher, spec.scheduler_for(_TABLE.epochs), workers=workers, trial_epoch_budget=trials * _TABLE.epochs, match=match)
    frame = pd.DataFrame(result.reports)
    frame["hypervolume"] = hypervolume_curve(result.reports)
    frame.insert(0, "workers", workers)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", noise_floor_label(seed_offset) if seed_offset else method)
    return frame[["method", "seed", "workers", "trial_epochs", "time", "hypervolume", "trial", "config_id", "epoch", "decision"]]


def rank_agreement(tbl: Table) -> pd.DataFrame:
    """Spearman correlation of each objective at epoch e with its last-epoch value, over configurations recorded to the end."""
    full = [cid for cid, rs in tbl.results.items() if len(rs) == tbl.epochs and not rs[-1]["diverged"]]
    rows = []
    for epoch in range(1, tbl.epochs + 1):
        row = {"epoch": epoch}
        for objective in (*OBJECTIVES, "joint_score"):
            now = [tbl.results[c][epoch - 1][objective] for c in full]
            final = [tbl.results[c][-1][objective] for c in full]
            row[objective] = float(pd.Series(now).rank().corr(pd.Series(final).rank())) if len(full) > 2 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def on_grid(run: pd.DataFrame, budget: int, column: str = "hypervolume") -> np.ndarray:
    """A run's value after 1..budget trial-epochs (a run cut short keeps its last value)."""
    values = np.zeros(budget)
    got = run[column].to_numpy()[:budget]
    values[: len(got)] = got
    if len(got) < budget and len(got):
        values[len(got) :] = got[-1]
    return values


def first_reaching(values: np.ndarray, target: float) -> float:
    hits = np.flatnonzero(values >= target - 1e-12)
    return float(hits[0] + 1) if len(hits) else math.inf


def time_reaching(run: pd.DataFrame, target: float) -> float:
    hits = run.loc[run["hypervolume"] >= target - 1e-12, "time"]
    return float(hits.iloc[0]) if len(hits) else math.inf


def quartiles(values) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def gaps_below(stack: np.ndarray, baseline: np.ndarray) -> dict:
    """How far a method's curves (seeds x budgets) fall below the baseline's at any budget, two ways.

    `median_curves`: the baseline's median curve less the method's. `paired`: the median over seeds of
    (baseline - method) on the same seed -- the early-stopping methods share the baseline's sampler
    seeds, so this takes the draw's luck out. Positive: below somewhere; 0 or less: never below.
    `share_at_or_above`: the least share of seeds, over budgets, where the method is at or above."""
    difference = baseline - stack
    return {"median_curves": float(np.max(np.median(baseline, axis=0) - np.median(stack, axis=0))),
            "paired": float(np.max(np.median(difference, axis=0))),
            "share_at_or_above": float(np.min(np.mean(difference <= 1e-12, axis=0)))}


def summarise(frames: pd.DataFrame, methods: list[str], seeds: list[int], budget: int) -> dict:
    curves = {(m, s): on_grid(g, budget) for (m, s), g in frames[frames["workers"] == CURVE_WORKERS].groupby(["method", "seed"])}
    target = float(np.median([curves[(BASELINE, s)][-1] for s in seeds]))
    baseline = np.array([curves[(BASELINE, s)] for s in seeds])
    checkpoints = sorted({max(1, round(budget * f)) for f in FRACTIONS})
    summary = {"budget_trial_epochs": budget, "target_hv": target, "checkpoints": checkpoints, "methods": {}}
    for method in methods:
        stack = np.array([curves[(method, s)] for s in seeds])
        need = [first_reaching(run, target) for run in stack]
        entry = {
            "hv_at": {str(te): quartiles(stack[:, te - 1]) for te in checkpoints},
            "trial_epochs_to_target": need,
            "median_trial_epochs_to_target": float(np.median(need)),
            "seeds_reaching_target": int(np.sum(np.isfinite(need))),
            "worst_gap_below_baseline": gaps_below(stack, baseline),
            "wall": {},
        }
        for workers, group in frames[frames["method"] == method].groupby("workers"):
            runs = [g for _, g in group.groupby("seed")]
            entry["wall"][str(workers)] = {"budget_seconds": float(np.median([g["time"].iloc[-1] for g in runs])),
                                           "seconds_to_target": float(np.median([time_reaching(g, target) for g in runs])),
                                           "trials": float(np.median([g["trial"].nunique() for g in runs]))}
        summary["methods"][method] = entry
    return summary


def report(summary: dict, workers: list[int]) -> str:
    budget, rows = summary["budget_trial_epochs"], []
    for method, m in summary["methods"].items():
        need = m["median_trial_epochs_to_target"]
        cells = [method]
        cells += [f"{q2:.4f} [{q1:.4f}, {q3:.4f}]" for q1, q2, q3 in (m["hv_at"][str(te)] for te in summary["checkpoints"])]
        cells += [f"{need:.0f} ({need / budget:.2f})" if math.isfinite(need) else "not reached", f"{m['seeds_reaching_target']}",
                  *(f"{m['worst_gap_below_baseline'][k]:+.4f}" for k in ("median_curves", "paired")),
                  f"{m['worst_gap_below_baseline']['share_at_or_above']:.2f}"]
        for w in workers:
            wall = m["wall"].get(str(w), {})
            to_target = wall.get("seconds_to_target", math.inf)
            cells += [f"{wall.get('budget_seconds', math.nan) / 3600:.2f}", f"{to_target / 3600:.2f}" if math.isfinite(to_target) else "-"]
        rows.append(cells)
    header = ["method", *[f"HV@{te} med [IQR]" for te in summary["checkpoints"]], "te to target (frac)", "seeds hit", "worst gap", "worst paired gap", "seeds >= min"]
    for w in workers:
        header += [f"h budget W={w}", f"h to target W={w}"]
    return table(rows, header)


def plot(frames: pd.DataFrame, summary: dict, agreement: pd.DataFrame, methods: list[str], path: Path, title: str) -> None:
    """Left: hypervolume vs trial-epochs (median, IQR band). Right: Spearman of epoch-e objectives with the last epoch's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = summary["budget_trial_epochs"]
    fig, (ax, rank_ax) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=110, gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(1, budget + 1)
    curves = frames[frames["workers"] == CURVE_WORKERS]
    for method in methods:
        stack = np.array([on_grid(g, budget) for _, g in curves[curves["method"] == method].groupby("seed")])
        q1, q2, q3 = np.percentile(stack, [25, 50, 75], axis=0)
        ax.plot(x, q2, color=colour(method, methods), ls="--" if method.startswith(BASELINE) else "-", lw=2 if method == BASELINE else 1.5, label=method)
        ax.fill_between(x, q1, q3, color=colour(method, methods), alpha=0.10, lw=0)
    ax.axhline(summary["target_hv"], color="grey", ls=":", lw=1, label=f"target: random-fifo median final HV {summary['target_hv']:.4f}")
    ax.axvline(budget / 3, color="grey", ls="-.", lw=0.8, label="1/3 of the budget")
    ax.set_xlabel(f"trial-epochs ({CURVE_WORKERS} workers, simulated arrival order)")
    ax.set_ylabel("hypervolume (latest point per trial; ref (1,1,1))")
    lows = np.percentile([on_grid(g, budget)[max(0, budget // 8 - 1)] for _, g in curves.groupby(["method", "seed"])], 10)
    ax.set_ylim(lows - 0.01, min(1.0, curves["hypervolume"].max() + 0.005))
    ax.set_xlim(1, budget)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    for objective in (*OBJECTIVES, "joint_score"):
        rank_ax.plot(agreement["epoch"], agreement[objective], marker="o", ms=3, label=objective)
    rank_ax.set_xlabel("epoch")
    rank_ax.set_ylabel("Spearman with the last epoch's value")
    rank_ax.set_ylim(min(0.0, float(agreement.drop(columns="epoch").min().min())) - 0.05, 1.02)
    rank_ax.grid(alpha=0.3)
    rank_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool): the cost on a shared machine."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    global _TABLE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True, help="a *_curves.parquet of benchmarks/record_curves.py")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per method (default 20)")
    parser.add_argument("--trials", type=int, default=24, help="budget = trials x the table's epochs trial-epochs (default 24)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 16], help="simulated workers (default 2 16; 2 is required)")
    parser.add_argument("--methods", nargs="+", type=lambda name: Method.parse(name).name, default=METHODS,
                        help="<sampler>-<scheduler>[-g<grace>][-r<rf>][-w<warm-up>] (default: the 15 of METHODS)")
    parser.add_argument("--cost", choices=("cpu_seconds", "seconds"), default="cpu_seconds", help="per-epoch time (default cpu_seconds)")
    parser.add_argument("--match", choices=MATCH_RULES, default="nearest",
                        help="a suggestion gets the nearest recorded configuration, or the nearest this search has not run yet (fresh)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if CURVE_WORKERS not in args.workers:
        parser.error(f"--workers must include {CURVE_WORKERS}")
    methods = [BASELINE] + [m for m in args.methods if m != BASELINE]  # everything is measured against it
    began = time.perf_counter()
    _TABLE = Table.load(args.table, cost=args.cost)
    n_configs, budget, seeds = len(_TABLE.configs), args.trials * _TABLE.epochs, list(range(args.seeds))
    partial = _TABLE.dataset == "cifar10" and n_configs < 96 or _TABLE.dataset == "mnist" and n_configs < 40
    label = f"{args.table.name}: {n_configs} configurations x {_TABLE.epochs} epochs{' (PARTIAL: recording not finished)' if partial else ''}"
    print(f"{label}; budget {args.trials} x {_TABLE.epochs} = {budget} trial-epochs per search; {len(methods)} methods x "
          f"{len(seeds)} seeds x workers {args.workers}; epoch cost = {args.cost}; "
          f"a suggestion gets the {'nearest recorded configuration not yet run' if args.match == 'fresh' else 'nearest recorded configuration'}", flush=True)

    # Slowest first (TPE with early stopping suggests the most trials), so the pool ends together.
    tasks = sorted(((m, s, w, args.trials, args.match, 0) for m in methods for s in seeds for w in args.workers),
                   key=lambda t: (Method.parse(t[0]).sampler != "tpe", Method.parse(t[0]).scheduler == "fifo"))
    tasks += [(BASELINE, s, CURVE_WORKERS, args.trials, args.match, len(seeds)) for s in seeds]
    methods.append(noise_floor_label(len(seeds)))
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        frames = pd.concat(list(pool.map(run_one, tasks, chunksize=1)), ignore_index=True)
    frames = frames.sort_values(["method", "seed", "workers", "trial_epochs"], ignore_index=True)
    summary = summarise(frames, methods, seeds, budget)
    agreement = rank_agreement(_TABLE)
    replay_seconds = time.perf_counter() - began

    stem = f"search_efficiency_{args.table.stem}" + ("_fresh" if args.match == "fresh" else "")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / f".{stem}.parquet.tmp"
    pq.write_table(pa.Table.from_pandas(frames, preserve_index=False), tmp)
    tmp.replace(args.out / f"{stem}.parquet")
    plot(frames, summary, agreement, methods, args.out / f"{stem}.png",
         f"{label}; {len(seeds)} seeds; budget {budget} trial-epochs; lines: median over seeds, bands: IQR")
    write_json(args.out / f"{stem}.json", {"table": str(args.table), "configurations": n_configs, "epochs": _TABLE.epochs, "partial": partial,
                                           "machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                           "summary": summary, "rank_agreement": agreement.to_dict(orient="records"), "seconds": replay_seconds,
                                           "cpu_seconds": cpu_seconds()})

    print(f"\nHypervolume after N trial-epochs ({CURVE_WORKERS} workers; median [IQR] over seeds); trial-epochs to reach the target "
          f"= random-fifo's median final HV {summary['target_hv']:.4f} (median over seeds; fraction of the budget); worst gap = "
          f"max over budgets of (random-fifo median - method median); worst paired gap = max over budgets of the median over seeds of "
          f"(random-fifo - method, same seed); seeds >= min = the least share of seeds at or above random-fifo at any budget; "
          f"simulated hours for the whole budget and to the target:")
    print(report(summary, args.workers))
    print(f"\nSpearman of each objective at epoch e with its epoch-{_TABLE.epochs} value, over the configurations recorded to the end:")
    print(table([[str(r["epoch"]), *(f"{r[o]:.3f}" for o in (*OBJECTIVES, "joint_score"))] for r in agreement.to_dict(orient="records")],
                ["epoch", *OBJECTIVES, "joint_score"]))
    print(f"\nwrote {args.out / stem}.{{parquet,png,json}}  ({time.perf_counter() - began:.0f} s wall, {cpu_seconds():.0f} CPU-s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
