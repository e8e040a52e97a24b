"""Hypervolume per trial-epoch: random+FIFO vs TPE+FIFO vs TPE+ASHA(joint_score) vs TPE+pareto-asha.

Every method runs a real Ray Tune search (our trainable, searcher and schedulers from
regene_search/search/) on the same data subset, search space, probe and seeds, 2 concurrent
trials with 1 CPU each. FIFO methods run `--trials` trials (each planned for `--max-epochs`);
the early-stopping methods get the same budget of trial-epochs (`--trials x --max-epochs`) and
as many trials as fit in it (a global Tune stopper ends the search when the budget is spent).

Hypervolume (search/pareto.py: minimisation form, reference (1, 1, 1)) is recorded after every
reported epoch, in report-arrival order, of the set holding each trial's latest reported
objectives -- the set the pareto stage ranks (trials.parquet keeps each trial's last report).
`hypervolume_all` also counts every earlier epoch's point (monotone).

    python benchmarks/search_efficiency.py           # 4 methods x 3 seeds (~35-45 min on 2 shared cores)
    python benchmarks/search_efficiency.py --quick   # 1 seed, tiny (~3-4 min)

Writes benchmarks/results/search_efficiency.parquet (one row per reported epoch: method, seed,
trial_epochs, hypervolume, trial_id, epoch, the three objectives, hypervolume_all, seconds),
search_efficiency.png and search_efficiency.json (summary). `--from-parquet FILE` redoes the
summary and the plot from a parquet without searching.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_dataset, load, local_ray, machine, table, write_json  # noqa: E402

from regene_search.config import Budget, ProbeConfig  # noqa: E402
from regene_search.search.pareto import OBJECTIVES, hypervolume, hypervolume_history, to_minimisation  # noqa: E402
from regene_search.search.pareto_asha import ParetoASHA  # noqa: E402
from regene_search.search.schedulers import FIFOScheduler, RecordingASHA  # noqa: E402
from regene_search.search.space import load_space  # noqa: E402
from regene_search.search.tuner import SearchSettings, make_searcher, make_trainable, quiet_tune_output, run_config, trial_dirname  # noqa: E402
from regene_search.trial import TrialSetup  # noqa: E402

SPACE = Path(__file__).resolve().parent / "search_efficiency_space.toml"
# method -> (sampler, scheduler kind)
METHODS = {
    "random-fifo": ("random", "fifo"),
    "tpe-fifo": ("tpe", "fifo"),
    "tpe-asha": ("tpe", "asha"),
    "tpe-pareto-asha": ("tpe", "pareto-asha"),
}
COLOURS = {"random-fifo": "tab:gray", "tpe-fifo": "tab:blue", "tpe-asha": "tab:orange", "tpe-pareto-asha": "tab:green"}


class ResultLog(tune.Callback):
    """Every reported result, in the order the driver receives them."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        keep = ("epoch", "diverged", *OBJECTIVES, "joint_score", "train_seconds", "probe_seconds")
        self.results.append({"trial_id": trial.trial_id, "arrived": time.time(), **{k: result.get(k) for k in keep}})


class TrialEpochBudget(tune.Stopper):
    """Ends the whole search once `budget` epochs have been reported (over all trials)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.reported = 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.reported += 1
        return False

    def stop_all(self) -> bool:
        return self.reported >= self.budget


def make_scheduler(kind: str, max_epochs: int):
    """The same schedulers (and arguments) as regene_search.search.schedulers.make_scheduler."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind == "asha":
        return RecordingASHA(time_attr="epoch", metric="joint_score", mode="max", max_t=max_epochs, grace_period=1, reduction_factor=2)
    return ParetoASHA(max_t=max_epochs, grace_period=1, reduction_factor=2)


def run_search(method: str, seed: int, *, data, budget: Budget, args) -> tuple[list[dict], dict]:
    sampler, kind = METHODS[method]
    settings = SearchSettings(trials=args.trials, sampler=sampler, max_concurrent=2, cpus_per_trial=1.0, max_failures=1, seed=seed)
    setup = TrialSetup(probe=budget.probe, seed=seed, hflip=args.dataset == "shapes")
    epoch_budget = args.trials * args.max_epochs
    log = ResultLog()
    with tempfile.TemporaryDirectory(prefix="rs-bench-tune-", dir="/tmp") as storage:
        config = run_config(Path(storage), settings, [log])
        if kind != "fifo":
            config.stop = TrialEpochBudget(epoch_budget)
        tuner = tune.Tuner(
            make_trainable(data, setup, budget, settings),
            param_space=load_space(SPACE).to_tune() | {"epochs": args.max_epochs},
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(settings),
                scheduler=make_scheduler(kind, args.max_epochs),
                num_samples=args.trials if kind == "fifo" else 4 * args.trials,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=config,
        )
        start = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - start
        errors = sum(r.error is not None for r in grid)
    results = log.results[:epoch_budget]
    started = {r["trial_id"] for r in results}
    return results, {"method": method, "seed": seed, "wall_seconds": wall, "trials_reporting": len(started), "errors": errors,
                     "trial_epochs": len(results), "train_seconds": sum(r["train_seconds"] or 0 for r in results),
                     "probe_seconds": sum(r["probe_seconds"] or 0 for r in results)}


def curve(results: list[dict]) -> pd.DataFrame:
    """Hypervolume after each reported epoch: of each trial's latest point, and of all points so far."""
    latest: dict[str, np.ndarray] = {}
    points = []
    rows = []
    for i, r in enumerate(results, start=1):
        bad = r.get("diverged") or any(r.get(k) is None or not math.isfinite(float(r[k])) for k in OBJECTIVES)
        point = np.full(len(OBJECTIVES), np.nan) if bad else to_minimisation(np.array([[float(r[k]) for k in OBJECTIVES]]))[0]
        latest[r["trial_id"]] = point
        points.append(point)
        rows.append({"trial_epochs": i, "hypervolume": hypervolume(np.array(list(latest.values()))), "trial_id": r["trial_id"],
                     "epoch": r.get("epoch"), "arrived": r["arrived"],
                     **{k: (float("nan") if bad else float(r[k])) for k in OBJECTIVES}})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["hypervolume_all"] = hypervolume_history(np.array(points))
        frame["seconds"] = frame.pop("arrived") - results[0]["arrived"]
    return frame


def on_grid(frame: pd.DataFrame, budget: int) -> np.ndarray:
    """A run's hypervolume at trial-epochs 1..budget (0 before the first report, last value after the end)."""
    values = np.zeros(budget)
    for te, hv in zip(frame["trial_epochs"], frame["hypervolume"]):
        if te <= budget:
            values[te - 1 :] = hv
    return values


def first_reaching(values: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(values >= target - 1e-12)
    return int(hits[0]) + 1 if len(hits) else None


def summarise(frames: pd.DataFrame, seeds: list[int], budget: int) -> dict:
    """Trial-epochs each method needs to reach random-FIFO's final hypervolume (and 99% of it), per seed and on the mean curve."""
    grids = {(m, s): on_grid(g, budget) for (m, s), g in frames.groupby(["method", "seed"])}
    baseline = "random-fifo"
    methods = [m for m in METHODS if any((m, s) in grids for s in seeds)]
    summary: dict = {"budget_trial_epochs": budget, "methods": {}}
    target_mean = float(np.mean([grids[(baseline, s)][-1] for s in seeds if (baseline, s) in grids]))
    checkpoints = sorted({max(1, round(budget * f)) for f in (1 / 8, 1 / 4, 1 / 3, 1 / 2, 1)})
    for method in methods:
        runs = {s: grids[(method, s)] for s in seeds if (method, s) in grids}
        mean_curve = np.mean(list(runs.values()), axis=0)
        entry: dict = {
            "final_hv_mean": float(mean_curve[-1]),
            "final_hv_min": float(min(r[-1] for r in runs.values())),
            "final_hv_max": float(max(r[-1] for r in runs.values())),
            "hv_mean_at": {str(te): float(mean_curve[te - 1]) for te in checkpoints},
        }
        for name, level in (("", 1.0), ("_99pct", 0.99)):
            per_seed = []
            for s, run in runs.items():
                if (baseline, s) not in grids:
                    continue
                target = level * grids[(baseline, s)][-1]
                need = first_reaching(run, target)
                per_seed.append({"seed": s, "target_hv": float(target), "final_hv": float(run[-1]),
                                 "trial_epochs_to_target": need, "fraction": None if need is None else need / budget})
            need = first_reaching(mean_curve, level * target_mean)
            fractions = [p["fraction"] for p in per_seed]
            entry[f"per_seed{name}"] = per_seed
            entry[f"mean_curve_trial_epochs_to_target{name}"] = need
            entry[f"mean_curve_fraction{name}"] = None if need is None else need / budget
            # A seed that never reaches its target counts as > 1 (the median then says so).
            entry[f"median_seed_fraction{name}"] = float(np.median([f if f is not None else math.inf for f in fractions])) if fractions else None
        summary["methods"][method] = entry
    summary["target_hv_mean"] = target_mean
    summary["best_hv_any_run"] = float(frames["hypervolume"].max())
    return summary


GAP_FLOOR = 2e-3  # the gap panel's floor (the best run's own gap is 0)
STYLES = {"random-fifo": "--", "tpe-fifo": "-", "tpe-asha": "-", "tpe-pareto-asha": "-"}


def plot(frames: pd.DataFrame, summary: dict, budget: int, path: Path, title: str) -> None:
    """Left: hypervolume vs trial-epochs. Right: the gap to the best hypervolume any run found (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    x = np.arange(1, budget + 1)
    best = summary["best_hv_any_run"]
    for method in METHODS:
        runs = [on_grid(g, budget) for (m, _), g in frames.groupby(["method", "seed"]) if m == method]
        if not runs:
            continue
        stack = np.array(runs)
        for axis, values in ((ax, stack), (gap_ax, np.maximum(best - stack, GAP_FLOOR))):
            axis.plot(x, values.mean(0), color=COLOURS[method], ls=STYLES[method], label=f"{method} (n={len(runs)})", lw=2, zorder=3)
            axis.fill_between(x, values.min(0), values.max(0), color=COLOURS[method], alpha=0.12, lw=0)
    target = summary["target_hv_mean"]
    ax.axhline(target, color="black", ls=":", lw=1, label=f"random-fifo final HV (mean {target:.4f})")
    gap_ax.axhline(max(best - target, GAP_FLOOR), color="black", ls=":", lw=1, label="random-fifo final HV")
    need = summary["methods"].get("tpe-pareto-asha", {}).get("mean_curve_trial_epochs_to_target")
    if need is not None:
        for axis in (ax, gap_ax):
            axis.axvline(need, color=COLOURS["tpe-pareto-asha"], ls=":", lw=1.5)
        ax.annotate(f"pareto-asha mean curve reaches it\nat {need} trial-epochs ({need / budget:.0%})", (need, target),
                    xytext=(-8, 14), textcoords="offset points", fontsize=9, color=COLOURS["tpe-pareto-asha"], ha="right")
    for axis in (ax, gap_ax):
        axis.axvline(budget / 3, color="grey", ls="-.", lw=0.8, label="1/3 of the budget")
        axis.set_xlabel("trial-epochs consumed (reported epochs, all trials, arrival order)")
        axis.set_xlim(1, budget)
        axis.grid(alpha=0.3)
    ax.set_ylabel("hypervolume (min. form, ref (1,1,1); latest point per trial)")
    lows = frames["hypervolume"][frames["hypervolume"] > 0]
    if len(lows):
        ax.set_ylim(max(0.0, float(lows.quantile(0.05)) - 0.02), min(1.0, best + 0.01))
    ax.legend(loc="lower right", fontsize=8)
    gap_ax.set_yscale("log")
    gap_ax.set_ylim(bottom=GAP_FLOOR * 0.9)
    gap_ax.set_ylabel(f"gap to the best HV of any run ({best:.4f}), log")
    gap_ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(summary: dict, budget: int) -> str:
    rows = []
    for method, m in summary["methods"].items():
        cells = [method, f"{m['final_hv_mean']:.4f} [{m['final_hv_min']:.4f}, {m['final_hv_max']:.4f}]",
                 f"{m['hv_mean_at'][str(max(1, round(budget / 3)))]:.4f}"]
        for name in ("", "_99pct"):
            need = m[f"mean_curve_trial_epochs_to_target{name}"]
            per_seed = ", ".join("-" if p["trial_epochs_to_target"] is None else str(p["trial_epochs_to_target"]) for p in m[f"per_seed{name}"])
            cells += ["not reached" if need is None else f"{need} ({need / budget:.2f})", per_seed]
        rows.append(cells)
    return table(rows, ["method", "final HV mean [min, max]", f"HV @ {max(1, round(budget / 3))}",
                        "to 100%: mean curve", "per seed", "to 99%: mean curve", "per seed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "shapes"), default=default_dataset())
    parser.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    parser.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    parser.add_argument("--trials", type=int, default=24, help="trials of the FIFO methods; budget = trials x max-epochs (default 24)")
    parser.add_argument("--max-epochs", type=int, default=4, help="epochs every trial plans (default 4; ASHA rungs at 1, 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--probe-steps", type=int, default=25, help="decoder-probe Adam steps (default 25, batch 32)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 8 trials x 3 epochs, 800 train images: a few minutes")
    parser.add_argument("--from-parquet", type=Path, help="re-summarise and re-plot an earlier run's parquet; no search is run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.val, args.trials, args.max_epochs, args.seeds, args.probe_steps = 800, 300, 8, 3, args.seeds[:1], 15
    suffix = "_quick" if args.quick else ""
    summary_path = args.out / f"search_efficiency{suffix}.json"

    if args.from_parquet:
        frames = pd.read_parquet(args.from_parquet)
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        run_args = previous.get("args", {})
        for key in ("dataset", "train", "val", "trials", "max_epochs", "seeds"):
            setattr(args, key, run_args.get(key, getattr(args, key)))
        args.seeds = sorted(frames["seed"].unique().tolist())
        args.methods = [m for m in METHODS if m in set(frames["method"])]
        epoch_budget = args.trials * args.max_epochs
        summary = summarise(frames, args.seeds, epoch_budget)
        payload = {**previous, "summary": summary}
        began = time.perf_counter()
    else:
        quiet_tune_output()
        probe = ProbeConfig(train_images=384, val_images=192, steps=args.probe_steps, batch_size=32, base_width=8)
        budget = Budget(name="bench", train_images=args.train, val_images=args.val, max_epochs=args.max_epochs, trials=args.trials, probe=probe)
        data = load(args.dataset, train=args.train, val=args.val, seed=0)
        epoch_budget = args.trials * args.max_epochs
        print(f"{args.dataset}: {len(data.train_x)} train / {len(data.val_x)} val images; space {SPACE.name}; "
              f"{args.trials} FIFO trials x {args.max_epochs} epochs = {epoch_budget} trial-epochs per search; seeds {args.seeds}; "
              f"probe {probe.steps} steps x {probe.batch_size}", flush=True)
        frames, runs = [], []
        began = time.perf_counter()
        with local_ray(num_cpus=2):
            for seed in args.seeds:  # methods interleaved within each seed, so load drift hits all alike
                for method in args.methods:
                    results, info = run_search(method, seed, data=data, budget=budget, args=args)
                    frame = curve(results)
                    frame.insert(0, "seed", seed)
                    frame.insert(0, "method", method)
                    frames.append(frame)
                    info["final_hv"] = float(frame["hypervolume"].iloc[-1]) if len(frame) else 0.0
                    runs.append(info)
                    print(f"  {method:16s} seed {seed}: {info['trials_reporting']:3d} trials, {info['trial_epochs']:3d} trial-epochs, "
                          f"final HV {info['final_hv']:.4f}, {info['wall_seconds']:.0f} s wall "
                          f"(elapsed {time.perf_counter() - began:.0f} s)", flush=True)
        frames = pd.concat(frames, ignore_index=True)
        args.out.mkdir(parents=True, exist_ok=True)
        parquet = args.out / f"search_efficiency{suffix}.parquet"
        tmp = parquet.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pandas(frames, preserve_index=False), tmp)
        tmp.replace(parquet)
        summary = summarise(frames, args.seeds, epoch_budget)
        payload = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "probe": dataclasses.asdict(probe), "runs": runs, "summary": summary, "total_seconds": time.perf_counter() - began}

    png = args.out / f"search_efficiency{suffix}.png"
    if "random-fifo" in args.methods:
        title = (f"{args.dataset} {args.train}/{args.val} imgs; budget {args.trials} trials x {args.max_epochs} epochs = {epoch_budget} "
                 f"trial-epochs; seeds {list(args.seeds)}; lines: mean over seeds, bands: min-max")
        plot(frames, summary, epoch_budget, png, title)
        print(f"\nTrial-epochs to reach random-fifo's final hypervolume, and 99% of it (budget {epoch_budget}; fraction of it in brackets; "
              f"per seed: against that seed's random-fifo)")
        print(report(summary, epoch_budget))
    write_json(summary_path, payload)
    print(f"\nwrote {png}, {summary_path}  ({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
