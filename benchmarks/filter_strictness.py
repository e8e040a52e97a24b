"""How strict must the filter be for the neutral judge to recognise the accepted generations?

Reads a finished run (its generations.parquet and its cached judge) and re-judges every
generation. For each strategy it prints the run's own filter, then stricter ones applied on top of
it, on the classifier's image confidence (the filter's second step):

* top fraction per class: of each class's accepted generations, only the most confident f
  (every class keeps some as long as it had any)
* fixed floor: only accepted generations whose image confidence is at least t

with the share accepted of all generations, the judge's accuracy on them, and the classes left
without an accepted image. Nothing is trained; the judge must be cached (a finished evaluate).

    python benchmarks/filter_strictness.py results/cifar10/cpuhour-s9 [--out benchmarks/results/filter_strictness.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_json  # noqa: E402

from regene_search.config import RunSpec  # noqa: E402
from regene_search.pipeline import load_run_data  # noqa: E402
from regene_search.results import RunPaths, read_parquet  # noqa: E402
from regene_search.runtime import load_checkpoint, pick_device  # noqa: E402
from regene_search.stages.context import StageContext  # noqa: E402
from regene_search.stages.evaluate import generations_of  # noqa: E402
from regene_search.stages.neutral import cache_path, load_neutral, neutral_setup, predict  # noqa: E402

FRACTIONS = (0.5, 0.25, 0.1)
FLOORS = (0.5, 0.7, 0.9)


def confidences(table: list[dict], trial_id: str, strategy: str) -> torch.Tensor:
    """The image step's confidence of each generation, in generations_of's order (the table's)."""
    return torch.tensor([r["image_confidence"] if r["image_confidence"] is not None else float("nan") for r in table
                         if r["trial_id"] == trial_id and r["strategy"] == strategy])


def top_per_class(keep: torch.Tensor, classes: torch.Tensor, confidence: torch.Tensor, fraction: float) -> torch.Tensor:
    """Of `keep`, the most confident `fraction` of each class (at least one where a class has any)."""
    chosen = torch.zeros_like(keep)
    for c in classes.unique():
        mine = torch.nonzero(keep & (classes == c)).flatten()
        if len(mine):
            count = max(1, round(fraction * len(mine)))
            chosen[mine[confidence[mine].argsort(descending=True)[:count]]] = True
    return chosen


def row(name: str, keep: torch.Tensor, correct: torch.Tensor, classes: torch.Tensor, num_classes: int) -> dict:
    empty = [c for c in range(num_classes) if not bool((keep & (classes == c)).any())]
    return {"filter": name, "accepted_share": float(keep.float().mean()), "accepted": int(keep.sum()),
            "judge_accuracy": float(correct[keep].float().mean()) if keep.any() else None, "empty_classes": empty}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "filter_strictness.json")
    args = parser.parse_args(argv)
    paths = RunPaths.existing(args.run_dir)
    spec = RunSpec.from_json(json.loads((args.run_dir / "run.json").read_text())["spec"])
    ctx = StageContext(paths=paths, spec=spec, data=load_run_data(spec), console=Console(stderr=True))
    _, recipe = neutral_setup(ctx)
    device = pick_device()
    judge = load_neutral(load_checkpoint(cache_path(ctx, recipe), "the run's judge is not cached: run its evaluate stage first"), device).eval()
    promoted = list(ctx.promoted_checkpoints())
    out = {"run_dir": str(args.run_dir), "strategies": []}
    generations = read_parquet(paths.generations, columns=["trial_id", "strategy", "image_confidence"]).to_pylist()
    for trial_id in promoted:
        for strategy, gens in generations_of(ctx, trial_id).items():
            logits, _ = predict(judge, gens["images"], device)
            correct, classes, accepted = logits.argmax(1) == gens["class"], gens["class"], gens["accepted"]
            confidence = confidences(generations, trial_id, strategy)
            rows = [row("none (every generation)", torch.ones_like(accepted), correct, classes, ctx.data.num_classes),
                    row("the run's filter", accepted, correct, classes, ctx.data.num_classes)]
            rows += [row(f"+ top {f:.0%} per class", top_per_class(accepted, classes, confidence, f), correct, classes, ctx.data.num_classes) for f in FRACTIONS]
            rows += [row(f"+ confidence >= {t}", accepted & (confidence >= t), correct, classes, ctx.data.num_classes) for t in FLOORS]
            out["strategies"].append({"trial_id": trial_id, "strategy": strategy, "rows": rows})
            print(f"\n{trial_id} {strategy}")
            print(table([[r["filter"], f"{r['accepted_share']:.3f}", str(r["accepted"]), "-" if r["judge_accuracy"] is None else f"{r['judge_accuracy']:.3f}",
                          ",".join(map(str, r["empty_classes"])) or "-"] for r in rows],
                        ["filter", "accepted share", "accepted", "judge accuracy", "classes with none"]))
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
