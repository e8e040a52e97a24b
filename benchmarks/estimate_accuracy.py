"""The start-up estimate against the measured wall time, stage by stage, of real runs.

    .venv/bin/python benchmarks/estimate_accuracy.py [--runs mnist:smoke cifar10:smoke] [--repeats 1]

Each run is the real CLI (`regene-search run DATASET --budget B`, every stage, its own Ray) with the
estimate on; each stage's `estimated_seconds` and `seconds` come from its stages.json. The target
(issue 18) is every stage within +-30 %. The judge's one-time training is counted where the run
paid it: a run whose judge is cached (a second run on the same data) estimates and pays none.
Writes results/estimate_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, machine, write_json  # noqa: E402

STAGES = ("search", "decoder", "generate", "evaluate")


def run_once(dataset: str, budget: str, results: Path, name: str) -> dict:
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "regene_search.cli", "run", dataset, "--data-dir", str(SHARED_DATA), "--budget", budget, "--results", str(results), "--name", name,
         "--ray-temp-dir", tempfile.mkdtemp(prefix="rs-est-", dir="/tmp")],
        capture_output=True, text=True, env={**os.environ, "REGENE_SEARCH_ESTIMATE": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{dataset} {budget} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    stages = json.loads((results / dataset / name / "stages.json").read_text())
    rows = [{"stage": s, "estimated": stages[s].get("estimated_seconds"), "measured": stages[s]["seconds"]} for s in STAGES if s in stages]
    return {"dataset": dataset, "budget": budget, "wall": time.time() - started, "load_after": list(os.getloadavg()), "stages": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["mnist:smoke", "cifar10:smoke"], help="DATASET:BUDGET pairs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "estimate_accuracy.json")
    args = parser.parse_args()
    info, found = machine(), []
    results = Path(tempfile.mkdtemp(prefix="estimate-accuracy-"))
    for repeat in range(args.repeats):
        for pair in args.runs:
            dataset, budget = pair.split(":")
            found.append(run_once(dataset, budget, results, f"est-{budget}-{repeat}"))
            print(f"\n{dataset} {budget} (repeat {repeat}, load after {found[-1]['load_after'][0]:.1f})")
            print(f"{'stage':<9} {'estimate':>9} {'measured':>9} {'ratio':>6}")
            for row in found[-1]["stages"]:
                ratio = row["estimated"] / row["measured"] if row["estimated"] else float("nan")
                print(f"{row['stage']:<9} {row['estimated'] or float('nan'):>8.0f}s {row['measured']:>8.0f}s {ratio:>6.2f}")
            total_e = sum(r["estimated"] or 0 for r in found[-1]["stages"])
            total_m = sum(r["measured"] for r in found[-1]["stages"])
            print(f"{'all':<9} {total_e:>8.0f}s {total_m:>8.0f}s {total_e / total_m:>6.2f}")
    write_json(args.out, {"machine": info, "runs": found})


if __name__ == "__main__":
    main()
