"""Does the search's probe rank encoders the way the full decoder and the generations do? (issue 13)

Per dataset: one real run (`pipeline.run_pipeline`, in-process Ray) of `--trials` trials with
`--promote-top` equal to the trial count, so every successful trial is promoted -- the whole
front first, then the dominated trials by rank and crowding -- and every one goes through the
decoder, generate and evaluate stages. The evaluate stage writes `proxy.parquet`: Kendall's
tau-b and Spearman's rho of each search score against each downstream result, oriented so that
+1 means "ranks the encoders as the result does" (`regene_search/stages/proxy.py`).

Then probe variants, each scored by tau/rho against the final decoder's val MAE over the same
encoders, with its cost:
- the epoch the probe is measured at: the run's own probe at each epoch, from history.parquet
  (an encoder trained for fewer epochs drops out of the later ones); cost = median probe_seconds;
- steps, training images and decoder width: the probe re-run on each promoted encoder's final
  checkpoint (`trial.probe_decoder_mae`, same data subset, same seed), one variant per
  `--probe-variants` entry STEPS:TRAIN:WIDTH (default: the smoke probe, then one factor at a
  time, then all three large); cost = median seconds per encoder, encoding included. The run's
  own probe setting, when listed, must reproduce the search's decoder_mae (printed).

A run folder that already exists is continued (finished stages are kept), so an interrupted
benchmark resumes where it stopped.

    python benchmarks/proxy_fidelity.py --quick                   # MNIST, 4 tiny trials, ~10 min here under load
    python benchmarks/proxy_fidelity.py --datasets mnist --trials 20
    python benchmarks/proxy_fidelity.py --datasets cifar10 --trials 20

Writes to --out (default benchmarks/results): proxy_fidelity[_quick]_DATASETS.parquet (one row per
(dataset, proxy or probe variant, downstream): kind, proxy, downstream, k, kendall_tau,
spearman_rho, cost_seconds, and the variant's epoch/steps/train_images/base_width),
.json (machine, arguments, run folders, stage times, the tables) and the tables on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the in-process Ray of this script only; set before Ray loads
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, SHARED_DATA, machine, table, write_json  # noqa: E402

from regene_search.config import BUDGETS, Budget, ProbeConfig, RunSpec  # noqa: E402
from regene_search.data.names import DatasetRef  # noqa: E402
from regene_search.models import load_classifier  # noqa: E402
from regene_search.ranks import kendall_tau_b, spearman_rho  # noqa: E402
from regene_search.results import RunPaths, read_json, read_parquet, table_from_rows, write_parquet  # noqa: E402
from regene_search.runtime import encode_all, load_checkpoint, pick_device  # noqa: E402
from regene_search.search.space import default_space_path  # noqa: E402
from regene_search.stages.proxy import HEADLINE, LABELS, downstream_results, promoted_scores  # noqa: E402
from regene_search.trial import probe_decoder_mae, probe_indices  # noqa: E402

# --quick: a budget small enough to run every stage on 4 encoders in minutes on 2 CPU cores.
QUICK_BUDGET = Budget(
    name="proxy-quick",
    train_images=2000,
    val_images=500,
    max_epochs=2,
    trials=4,
    probe=ProbeConfig(train_images=256, val_images=128, steps=30),
    decoder_epochs=1,
    neutral_epochs=1,
)
TARGET = "decoder_val_mae"  # what the probe stands in for
# (steps, train images, width): the smoke probe, each factor raised alone, then all three.
DEFAULT_VARIANTS = [(60, 1024, 8), (150, 1024, 8), (600, 1024, 8), (60, 4096, 8), (60, 1024, 16), (600, 4096, 16)]


def run_dataset(dataset: str, args: argparse.Namespace) -> RunPaths:
    """The run of `args.trials` trials with every successful trial promoted, continued if it exists."""
    ref = DatasetRef.of(dataset)
    spec = RunSpec(
        dataset=ref,
        data_dir=str(SHARED_DATA),
        budget=args.budget,
        name=f"{args.budget}-{args.trials}t-{args.sampler}-seed{args.seed}",
        results_root=str(args.results.resolve()),
        space_path=str(default_space_path(ref)),
        seed=args.seed,
        trials=args.trials,
        sampler=args.sampler,
        promote="knee",
        promote_top=args.trials,
        max_concurrent=args.max_concurrent,
        neutral_depth=args.neutral_depth,
        generate_n=args.generate_n,
        generate_per_class=args.generate_per_class,
        novelty_samples=args.novelty_samples,
    )
    run_dir = args.results.resolve() / ref.folder / spec.name
    if (run_dir / "run.json").is_file():
        paths = RunPaths.existing(run_dir)
        spec = RunSpec.from_json(read_json(paths.run_json)["spec"])
    else:
        paths = RunPaths.plan(spec.results_root, ref, spec.name)
    from rich.console import Console

    from regene_search.pipeline import run_pipeline

    with tempfile.TemporaryDirectory(prefix="rs-proxy-", dir="/tmp") as ray_dir:
        run_pipeline(spec, paths, address=None, dashboard_host="127.0.0.1", console=Console(), ray_temp_dir=ray_dir)
    return paths


def stat_row(dataset: str, kind: str, proxy: str, lower_is_better: bool, values: dict[str, float], target: dict[str, float], **extra: Any) -> dict[str, Any]:
    """tau/rho of a lower-is-better (or higher) proxy against the final decoder MAE (lower is better), oriented."""
    ids = [t for t in values if t in target and values[t] == values[t] and target[t] == target[t]]
    sign = 1 if lower_is_better else -1
    x, y = [values[t] for t in ids], [target[t] for t in ids]
    return {
        "dataset": dataset,
        "kind": kind,
        "proxy": proxy,
        "downstream": TARGET,
        "k": len(ids),
        "kendall_tau": sign * kendall_tau_b(x, y) if len(ids) >= 3 else float("nan"),
        "spearman_rho": sign * spearman_rho(x, y) if len(ids) >= 3 else float("nan"),
        **extra,
    }


def epoch_variants(dataset: str, paths: RunPaths, target: dict[str, float]) -> list[dict[str, Any]]:
    """The run's probe read at each epoch from history.parquet."""
    history = [r for r in read_parquet(paths.history).to_pylist() if r["trial_id"] in target]
    rows = []
    for epoch in sorted({r["epoch"] for r in history}):
        at = [r for r in history if r["epoch"] == epoch]
        cost = statistics.median(r["probe_seconds"] for r in at)
        values = {r["trial_id"]: r["decoder_mae"] for r in at}
        rows.append(stat_row(dataset, "probe epoch", f"probe at epoch {epoch}", True, values, target, epoch=epoch, cost_seconds=cost))
    return rows


def probe_variants(dataset: str, paths: RunPaths, target: dict[str, float], args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The probe re-run on each promoted encoder's final checkpoint, per (steps, train images, width)."""
    import torch

    from regene_search.pipeline import load_run_data

    spec = RunSpec.from_json(read_json(paths.run_json)["spec"])
    base = spec.resolved_budget.probe
    data = load_run_data(spec)
    device = pick_device()
    encoders = {t: load_classifier(load_checkpoint(paths.classifier_checkpoint(t), "run the search first"), device) for t in target}
    rows, reproduced = [], {}
    for steps, train, width in args.probe_variants:
        probe = dataclasses.replace(base, steps=steps, train_images=train, base_width=width)
        train_idx, val_idx = probe_indices(len(data.train_x), len(data.val_x), probe)
        values, seconds = {}, []
        for trial_id, model in encoders.items():
            started = time.perf_counter()
            train_z = encode_all(model, data.train_x[train_idx], device)
            val_z = encode_all(model, data.val_x[val_idx], device)
            values[trial_id] = probe_decoder_mae(train_z, data.train_x[train_idx], val_z, data.val_x[val_idx], probe, device)
            seconds.append(time.perf_counter() - started)
        if probe == base:
            reproduced = values
        label = f"probe {steps} steps, {len(train_idx)} images, width {width}" + (" (the run's)" if probe == base else "")
        rows.append(
            stat_row(dataset, "probe setting", label, True, values, target, steps=steps, train_images=len(train_idx), base_width=width,
                     cost_seconds=statistics.median(seconds))
        )
        print(f"  {dataset}: {label}: tau {rows[-1]['kendall_tau']:+.2f}, {rows[-1]['cost_seconds']:.1f} s per encoder", flush=True)
    return rows, reproduced


def analyse(dataset: str, paths: RunPaths, args: argparse.Namespace) -> dict[str, Any]:
    scores = promoted_scores(paths)
    results = downstream_results(paths, list(scores))
    target = {t: v[TARGET] for t, v in results.items()}
    proxy_rows = [dict(r, kind="search score") for r in read_parquet(paths.proxy).to_pylist()] if paths.proxy.exists() else []
    rows = epoch_variants(dataset, paths, target)
    setting_rows, reproduced = probe_variants(dataset, paths, target, args) if not args.skip_probe_variants else ([], {})
    drift = max((abs(reproduced[t] - scores[t]["decoder_mae"]) for t in reproduced), default=float("nan"))
    stages = read_json(paths.stages_json)
    pareto = read_parquet(paths.pareto).to_pylist()
    return {
        "dataset": dataset,
        "run_dir": str(paths.dir),
        "encoders": len(scores),
        "on_front": sum(r["promoted"] and r["on_front"] for r in pareto),
        "stage_seconds": {s: v.get("seconds") for s, v in stages.items()},
        "reproduced_probe_max_abs_diff": drift,
        "rows": proxy_rows + rows + setting_rows,
    }


def print_tables(report: dict[str, Any]) -> None:
    dataset = report["dataset"]
    print(f"\n== {dataset}: {report['encoders']} encoders ({report['on_front']} on the front), run {report['run_dir']}")
    print("stage seconds: " + ", ".join(f"{s} {v:.0f}" for s, v in report["stage_seconds"].items() if v is not None))
    search = [r for r in report["rows"] if r["kind"] == "search score"]
    if search:
        downstream = list(dict.fromkeys(r["downstream"] for r in search))
        cells = {(r["proxy"], r["downstream"]): r for r in search}
        body = []
        for proxy in dict.fromkeys(r["proxy"] for r in search):
            body.append([proxy] + [_cell(cells.get((proxy, d))) for d in downstream])
        print("\nsearch scores vs downstream results, tau / rho (+ = same order); headline pairs: "
              + ", ".join(f"{p} -> {d}" for p, d in HEADLINE.items()))
        print(table(body, ["search score", *(LABELS.get(d, d) for d in downstream)]))
    variants = [r for r in report["rows"] if r["kind"] != "search score"]
    if variants:
        print(f"\nprobe variants vs {LABELS[TARGET]} (re-measured probe reproduces the search's to {report['reproduced_probe_max_abs_diff']:.2g}):")
        print(table([[r["proxy"], str(r["k"]), f"{r['kendall_tau']:+.2f}", f"{r['spearman_rho']:+.2f}", f"{r['cost_seconds']:.2f}"] for r in variants],
                    ["probe", "k", "tau", "rho", "s / encoder"]))


def _cell(row: dict[str, Any] | None) -> str:
    if row is None or row["k"] < 3:
        return "-"
    return f"{row['kendall_tau']:+.2f} / {row['spearman_rho']:+.2f}"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _variant(text: str) -> tuple[int, int, int]:
    steps, train, width = (int(v) for v in text.split(":"))
    return steps, train, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mnist,cifar10", help="comma-separated (default mnist,cifar10)")
    parser.add_argument("--trials", type=int, default=20, help="trials per search; all successful ones are promoted (>= 10 for the issue)")
    parser.add_argument("--budget", default="smoke", help="the run's budget (default smoke: 5k/1k images, <= 2 epochs, 4 decoder epochs)")
    parser.add_argument("--sampler", default="random", help="random spans the space evenly (default); tpe or nsga2 crowd the front")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--neutral-depth", type=int, default=None, help="neutral ResNet depth (default by budget)")
    parser.add_argument("--generate-n", type=_ints, default=(2, 3, 5))
    parser.add_argument("--generate-per-class", type=int, default=64)
    parser.add_argument("--novelty-samples", type=int, default=256)
    parser.add_argument(
        "--probe-variants", type=_variant, nargs="+", default=DEFAULT_VARIANTS,
        help="probe settings STEPS:TRAIN_IMAGES:WIDTH to re-run on every encoder (train images capped by the split)",
    )
    parser.add_argument("--skip-probe-variants", action="store_true", help="only the search scores and the probe per epoch")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of this process (the stages it runs and the re-run probes); 1, as a trial has: reproduces the search's probe exactly, "
        "and 2 threads ran the probe 20x slower on 2 oversubscribed cores here",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "proxy_fidelity", help="results root of the runs (default: the untracked results/)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="MNIST, 4 trials of a tiny budget, 2 probe variants: checks the script, proves nothing")
    args = parser.parse_args()
    if args.quick:
        BUDGETS[QUICK_BUDGET.name] = QUICK_BUDGET  # this process only; run.json records the whole budget
        args.datasets, args.trials, args.budget = "mnist", QUICK_BUDGET.trials, QUICK_BUDGET.name
        args.neutral_depth, args.generate_n, args.generate_per_class, args.novelty_samples = 8, (2, 3), 8, 32
        args.probe_variants = [(30, 256, 8), (120, 256, 8)]
        args.results = args.results.with_name(args.results.name + "_quick")
    import torch

    torch.set_num_threads(args.threads)
    started = time.time()
    reports = []
    for dataset in args.datasets.split(","):
        print(f"== {dataset}: run of {args.trials} trials, all promoted", flush=True)
        paths = run_dataset(dataset, args)
        reports.append(analyse(dataset, paths, args))
        print_tables(reports[-1])
    name = ("proxy_fidelity_quick" if args.quick else "proxy_fidelity") + "_" + "-".join(args.datasets.split(","))
    rows = [r for report in reports for r in report["rows"]]
    columns = ["dataset", "kind", "proxy", "downstream", "k", "kendall_tau", "spearman_rho", "cost_seconds", "epoch", "steps", "train_images", "base_width"]
    args.out.mkdir(parents=True, exist_ok=True)
    write_parquet(table_from_rows([{c: r.get(c) for c in columns} for r in rows], _schema(columns)), args.out / f"{name}.parquet")
    write_json(args.out / f"{name}.json", {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "seconds": time.time() - started, "datasets": reports})
    print(f"\nwrote {args.out / name}.parquet and .json in {time.time() - started:.0f} s")


def _schema(columns: list[str]):
    import pyarrow as pa

    types = {"k": pa.int64(), "epoch": pa.int64(), "steps": pa.int64(), "train_images": pa.int64(), "base_width": pa.int64()}
    return pa.schema([(c, types.get(c, pa.float64() if c in ("kendall_tau", "spearman_rho", "cost_seconds") else pa.string())) for c in columns])


if __name__ == "__main__":
    main()
