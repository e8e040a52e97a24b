"""The neutral judge's recipes (stages/neutral.py): test accuracy against training time, per dataset.

Trains the judge of each recipe on the dataset's whole training split (`quick`: on the smoke
budget's subset, for its epochs), as `ensure_neutral` does, here in this process, and prints after every epoch the wall time, the
process's CPU time (all threads; on a loaded machine the wall time overstates what the training
needs, so 20 minutes on 2 cores is a CPU budget of 40 core-minutes) and the test accuracy with and
without flip test-time augmentation. Per-epoch evaluation is timed apart from training.

    python benchmarks/neutral_judge.py --dataset cifar10 --recipe cpu          # ~20 min on 2 idle cores
    python benchmarks/neutral_judge.py --dataset mnist cifar10 --recipe quick cpu
    python benchmarks/neutral_judge.py --dataset cifar10 --recipe cpu --epochs 4   # a shorter schedule of the same recipe

`--epochs` shortens the recipe (the schedule is stretched over the epochs given), for a loaded
machine. Writes benchmarks/results/neutral_judge.json. `--save RESULTS_ROOT` also caches each
whole-split judge where `run` looks for it (`RESULTS_ROOT/<dataset>/_neutral/`), so runs reuse it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, SHARED_DATA, machine  # noqa: E402
from regene_search.config import BUDGETS  # noqa: E402
from regene_search.data import dataset_info, load_dataset  # noqa: E402
from regene_search.results import NEUTRAL_CACHE  # noqa: E402
from regene_search.runtime import save_checkpoint  # noqa: E402
from regene_search.stages.neutral import (  # noqa: E402
    JUDGE_SPLIT_SEED, JUDGE_VAL_FRACTION, RECIPES, NeutralConfig, judge_data, judge_target, predict, train_neutral,
)
from regene_search.storage import Location  # noqa: E402


def accuracy(model, data, device, *, tta: bool) -> float:
    before = model.config
    model.config = dataclasses.replace(before, flip_tta=tta and before.flip_tta)
    try:
        logits, _ = predict(model, data.test_x, device)
    finally:
        model.config = before
    return float((logits.argmax(1) == data.test_y).float().mean())


def measure(dataset: str, recipe_name: str, epochs: int | None, device: torch.device, save: Path | None = None) -> dict:
    recipe = RECIPES[recipe_name]
    if epochs:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    info = dataset_info(dataset)
    data = load_dataset(dataset, SHARED_DATA, seed=JUDGE_SPLIT_SEED, val_fraction=JUDGE_VAL_FRACTION)
    if not recipe.whole_split:  # the quick judge of a smoke run: its subset, for its epochs
        smoke = BUDGETS["smoke"]
        data = data.subset(train=smoke.train_images, val=smoke.val_images, seed=0)
        recipe = dataclasses.replace(recipe, epochs=epochs or smoke.neutral_epochs)
    data = judge_data(data)
    config = NeutralConfig(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes, depth=recipe.depth, width=recipe.width,
                           flip_tta=recipe.flips and info.hflip)
    curve: list[dict] = []
    clock = {"wall": time.perf_counter(), "cpu": time.process_time(), "eval_wall": 0.0, "eval_cpu": 0.0}

    def on_epoch(epoch: int, model) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        row = {"epoch": epoch, "train_wall_s": wall - clock["wall"] - clock["eval_wall"], "train_cpu_s": cpu - clock["cpu"] - clock["eval_cpu"]}
        plain = accuracy(model, data, device, tta=False)
        row.update(test_acc=plain, test_acc_tta=accuracy(model, data, device, tta=True) if config.flip_tta else plain, load_1min=os.getloadavg()[0])
        clock["eval_wall"] += time.perf_counter() - wall
        clock["eval_cpu"] += time.process_time() - cpu
        curve.append(row)
        print(f"{dataset} {recipe.name} epoch {epoch}/{recipe.epochs}: train {row['train_wall_s']:.0f} s wall, {row['train_cpu_s']:.0f} s CPU; "
              f"test acc {row['test_acc']:.4f}, with flip TTA {row['test_acc_tta']:.4f}; load {row['load_1min']:.1f}", flush=True)

    state = train_neutral(data, config, recipe, device=device, on_epoch=on_epoch)
    if save is not None and recipe.whole_split:  # the key of a whole-split recipe does not depend on the run
        path = Location.of(save) / dataset / NEUTRAL_CACHE / f"neutral-{recipe.key(dataset)}.pt"
        save_checkpoint(state, path)
        print(f"saved {path}", flush=True)
    last = curve[-1]
    return {"dataset": dataset, "recipe": dataclasses.asdict(recipe), "train_images": len(data.train_x), "test_images": len(data.test_x),
            "target": judge_target(dataset), "test_accuracy": state["test_accuracy"], "train_wall_s": last["train_wall_s"],
            "train_cpu_s": last["train_cpu_s"], "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["mnist", "cifar10"])
    parser.add_argument("--recipe", nargs="+", default=["quick", "cpu"], choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, help="shorten the recipe to this many epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "neutral_judge.json")
    parser.add_argument("--save", metavar="RESULTS_ROOT", help="cache each whole-split judge there, as `run --results RESULTS_ROOT` would")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    about = machine()
    print(f"machine: {about['cpu']}, {args.threads} threads, load average at start {about['load_average_at_start']}", flush=True)
    results = [measure(d, r, args.epochs, device, args.save) for d in args.dataset for r in args.recipe]
    print("\n| dataset | recipe | train images | epochs | test accuracy (flip TTA) | target | train wall | train CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['recipe']['name']} | {r['train_images']} | {r['recipe']['epochs']} | {r['test_accuracy']:.4f} | {r['target']:.2f} | "
              f"{r['train_wall_s'] / 60:.1f} min | {r['train_cpu_s'] / 60:.1f} core-min |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": about, "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
