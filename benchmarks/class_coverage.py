"""Why do some classes get no accepted generation, and which image-step threshold fixes it? (issue 18 item 4)

For every encoder of a finished run (its classifier and decoder checkpoints, its `generations.parquet`),
re-applies the two-step filter to the stored generations under three rules for the image step:

- `holdout` (the paper's, section 5.2): the classifier's mean confidence for class c over the real
  holdout images of class c;
- `reconstructions`: its mean confidence over the decoder's reconstructions of those same images,
  i.e. the confidence a faithful decode of a real class-c image gets from this decoder;
- the same, but never below chance (1 / classes): where the decoder is hopeless for a class, the
  reconstructions' confidence falls below a uniform guess.

The latent step keeps the holdout threshold in all three. For each rule it prints the accept rate, the
classes with no accepted generation, and the neutral judge's accuracy on the accepted images (the
paper's bar is 0.9; also as a class mean over the classes every rule accepts some of, which takes
the class mix out of the comparison), per encoder and as medians over encoders (min-max).

    python benchmarks/class_coverage.py RUN_DIR --judge results/cifar10/_neutral/neutral-KEY.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS  # noqa: E402
from regene_search.config import RunSpec  # noqa: E402
from regene_search.figures import decode_png  # noqa: E402
from regene_search.models import load_classifier  # noqa: E402
from regene_search.pipeline import load_run_data  # noqa: E402
from regene_search.results import RunPaths, read_parquet, read_run_record  # noqa: E402
from regene_search.runtime import encode_all, load_checkpoint  # noqa: E402
from regene_search.stages.decoder import decode_all, load_decoder  # noqa: E402
from regene_search.stages.generate import class_thresholds, image_logits, true_class_confidence  # noqa: E402
from regene_search.stages.neutral import load_neutral, predict  # noqa: E402

RULES = ("holdout", "reconstructions", "reconstructions, floored at chance")


def image_thresholds(classifier, decoder, data, device) -> dict[str, torch.Tensor]:
    """Per class: the mean confidence on real holdout images and on their reconstructions."""
    real = true_class_confidence(image_logits(classifier, data.val_x, device), data.val_y)
    recon_images = decode_all(decoder, encode_all(classifier, data.val_x, device).cpu(), device)
    recon = true_class_confidence(image_logits(classifier, recon_images, device), data.val_y)
    reconstructions = class_thresholds(recon, data.val_y, data.num_classes)
    return {"holdout": class_thresholds(real, data.val_y, data.num_classes), "reconstructions": reconstructions,
            "reconstructions, floored at chance": reconstructions.clamp_min(1 / data.num_classes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--judge", type=Path, required=True, help="a neutral judge checkpoint (stages/neutral.py)")
    parser.add_argument("--out", type=Path, default=RESULTS / "class_coverage.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paths = RunPaths.existing(args.run_dir)
    spec = RunSpec.from_json(read_run_record(paths)["spec"])
    data = load_run_data(spec)
    judge_state = load_checkpoint(args.judge, "no judge")
    judge = load_neutral(judge_state, device).eval()
    print(f"run {paths.dir}: {spec.dataset}, {len(data.val_x)} holdout images; judge test accuracy {judge_state['test_accuracy']:.4f}")
    generations = read_parquet(paths.generations).to_pandas()
    if "strategy" in generations:
        generations = generations[generations["strategy"] == "convex"]
    results = []
    for trial_id, rows in generations.groupby("trial_id"):
        classifier = load_classifier(load_checkpoint(paths.classifier_checkpoint(trial_id), "no classifier"), device)
        decoder = load_decoder(load_checkpoint(paths.decoder_checkpoint(trial_id), "no decoder"), device)
        thresholds = image_thresholds(classifier, decoder, data, device)
        classes = torch.tensor(rows["class"].to_numpy())
        images = torch.stack([decode_png(b, data.channels) for b in rows["image_png"]])
        judged = predict(judge, images, device)[0].argmax(1) == classes
        latent_ok = torch.tensor(rows["latent_confidence"].to_numpy()) >= thresholds["holdout"][classes]
        image_conf = torch.tensor(rows["image_confidence"].to_numpy())
        result = {"trial_id": trial_id, "thresholds": {k: v.tolist() for k, v in thresholds.items()}}
        for rule in RULES:
            accepted = latent_ok & (image_conf >= thresholds[rule][classes])
            per_class = torch.bincount(classes[accepted], minlength=data.num_classes)
            result[rule] = {
                "accept_rate": float(accepted.float().mean()),
                "empty_classes": [data.classes[c] for c in range(data.num_classes) if per_class[c] == 0],
                "neutral_acc_accepted": float(judged[accepted].float().mean()) if accepted.any() else float("nan"),
                "neutral_acc_rejected": float(judged[~accepted].float().mean()) if (~accepted).any() else float("nan"),
                "neutral_acc_by_class": [float(judged[accepted & (classes == c)].float().mean()) if per_class[c] else None for c in range(data.num_classes)],
            }
        # The judge's accuracy on the classes every rule accepts some of (a class mean): the rules on the same classes.
        shared = [c for c in range(data.num_classes) if all(result[rule]["neutral_acc_by_class"][c] is not None for rule in RULES)]
        for rule in RULES:
            result[rule]["neutral_acc_shared_classes"] = statistics.mean(result[rule]["neutral_acc_by_class"][c] for c in shared) if shared else float("nan")
        results.append(result)
        print(f"{trial_id}: image thresholds holdout {thresholds['holdout'].mean():.3f}, reconstructions {thresholds['reconstructions'].mean():.3f} (class means); "
              + "; ".join(f"{rule}: accept {result[rule]['accept_rate']:.3f}, judge {result[rule]['neutral_acc_accepted']:.3f}, "
                          f"empty {','.join(result[rule]['empty_classes']) or '-'}" for rule in RULES), flush=True)
    print("\n| image-step threshold | accept rate | neutral acc. on accepted | same, class mean over the classes every rule accepts | "
          "neutral acc. on rejected | encoders with an empty class | empty classes (all encoders) |")
    print("|---|---|---|---|---|---|---|")
    for rule in RULES:
        def median(key: str) -> str:
            values = [r[rule][key] for r in results]
            return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        empty = sum(bool(r[rule]["empty_classes"]) for r in results)
        total = sum(len(r[rule]["empty_classes"]) for r in results)
        print(f"| {rule} | {median('accept_rate')} | {median('neutral_acc_accepted')} | {median('neutral_acc_shared_classes')} | {median('neutral_acc_rejected')} | "
              f"{empty} of {len(results)} | {total} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run_dir": str(paths.dir), "judge": str(args.judge), "judge_test_accuracy": judge_state["test_accuracy"], "encoders": results}, indent=1))


if __name__ == "__main__":
    main()
