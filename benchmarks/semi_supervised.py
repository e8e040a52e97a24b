"""Do unlabelled images help the decoder of a semi-supervised run? (issue 14, item 4)

The LSDM paper (../shared/papers/001_...) learns its latent space from paired and unpaired data
and claims the unpaired data improves the generations' "geometric fidelity". Here the latent
space is a classifier's, which needs labels, so only the decoder can use unlabelled images
(`run --labelled-fraction F`: the decoders train on every training image).

MNIST, a fixed subset of TRAIN images of which a seeded, class-stratified FRACTION keeps its labels
(`ImageData.with_labelled_fraction`). Per seed, on the labelled images only: one classifier
(`trial.run_trial`, a fixed mid-size configuration), the holdout thresholds (validation keeps
its labels) and the LSDM latent generator (`generate.train_lsdm_task`). Then three decoders
(`decoder.train_decoder`, called directly):

- `labelled`: the labelled images only, for the decoder epochs (what the run did before);
- `labelled, same steps`: the labelled images only, for as many optimiser steps as `all` takes
  (so `all` vs this one isolates the data from the compute);
- `all`: every training image, labelled or not (what `--labelled-fraction` does).

Each decoder decodes the same convex combinations (`generate.sample_plan`) and the same LSDM
latents through the same two-step filter (`generate.filtered_rows`). The judge a smoke run uses
(`neutral.ensure_neutral`, trained once with every label and cached under --results; it is the
evaluation, outside the semi-supervised system) scores the accepted generations: neutral accuracy,
FID and coverage (Naeem et al. 2020) against TEST test images, on its features. As in a run without
VGG16 weights, the decoders' perceptual backbone is `decoder.perceptual_backbone`, i.e. that judge.
The three decoders are trained in a rotating order per seed.

    python benchmarks/semi_supervised.py                 # 3 seeds, ~25 min on 2 loaded cores
    python benchmarks/semi_supervised.py --seeds 0 --decoder-epochs 1 --lsdm-steps 100   # a quick look

Writes benchmarks/results/semi_supervised.json (machine, arguments, every (seed, decoder,
strategy) row, the medians) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, machine, mnist_available, table, write_json  # noqa: E402

from regene_search.config import ProbeConfig, RunSpec, TrialConfig  # noqa: E402
from regene_search.data import load_dataset  # noqa: E402
from regene_search.data.dataset import ImageData  # noqa: E402
from regene_search.generators.lsdm import LSDMSettings, load_lsdm  # noqa: E402
from regene_search.models import load_classifier  # noqa: E402
from regene_search.results import RunPaths  # noqa: E402
from regene_search.runtime import pick_device  # noqa: E402
from regene_search.search.space import default_space_path  # noqa: E402
from regene_search.stages.context import StageContext  # noqa: E402
from regene_search.stages.decoder import DecoderTraining, decoder_images, load_decoder, perceptual_backbone, train_decoder  # noqa: E402
from regene_search.stages.fid import fid  # noqa: E402
from regene_search.stages.generate import (  # noqa: E402
    GenerateSettings,
    TrainLatents,
    filtered_rows,
    generate_for_trial,
    holdout_thresholds,
    sample_plan,
    sampled_classes,
    strategy_generator,
    train_lsdm_task,
)
from regene_search.stages.neutral import ensure_neutral, load_neutral, predict  # noqa: E402
from regene_search.stages.quality import prdc  # noqa: E402
from regene_search.trial import TrialSetup, run_trial  # noqa: E402

DECODERS = ("labelled", "labelled, same steps", "all")
STRATEGIES = ("convex", "lsdm")
METRICS = (  # (key, label, higher is better)
    ("neutral_acc_gen", "neutral acc (accepted)", True),
    ("fid", "FID test/gen (accepted)", False),
    ("coverage", "coverage (accepted)", True),
    ("precision", "precision (accepted)", True),
    ("accept_rate", "accepted", True),
    ("neutral_acc_gen_all", "neutral acc (all)", True),
    ("fid_all", "FID test/gen (all)", False),
    ("coverage_all", "coverage (all)", True),
    ("decoder_val_mae", "decoder val MAE", False),
)
# A fixed encoder from the MNIST space's range (search_spaces/mnist.toml), trained long enough on a few hundred images.
CLASSIFIER = TrialConfig(blocks=3, convs_per_block=1, base_width=32, latent_dim=128, latent_activation="relu", lr=2e-3, batch_size=64, augment=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma list")
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled fraction of the train subset")
    parser.add_argument("--train", type=int, default=2000, help="training images (labelled + unlabelled)")
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000, help="test images: the real set of FID and coverage")
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--decoder-epochs", type=int, default=3, help="epochs of the `labelled` and `all` decoders")
    parser.add_argument("--lsdm-steps", type=int, default=700)
    parser.add_argument("--per-class", type=int, default=16, help="convex combinations per class and n (n = 2, 3, 5); LSDM draws as many")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 on a loaded 2-core machine was 3x slower than 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "semi_supervised.json")
    parser.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "regene-semi-supervised", help="results root: the judge's cache")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def train_classifier(data: ImageData, epochs: int, seed: int) -> dict[str, Any]:
    """The encoder's checkpoint dict after `epochs` epochs on `data`'s labelled images."""
    last: dict[str, Any] = {}

    def keep(metrics: dict[str, Any], make_checkpoint: Any) -> None:
        if metrics["epoch"] == epochs:
            last.update(make_checkpoint(), accuracy=metrics["accuracy"])

    probe = ProbeConfig(train_images=256, val_images=128, steps=5)  # the search score is not used here
    run_trial(data, dataclasses.replace(CLASSIFIER, epochs=epochs), TrialSetup(probe=probe, seed=seed), on_epoch=keep)
    return last


def labelled_only(data: ImageData) -> ImageData:
    """`data` without its unlabelled images."""
    return dataclasses.replace(data, unlabelled_x=None)


def decoder_data(arm: str, semi: ImageData, full: ImageData) -> ImageData:
    """What the decoder of `arm` is given. For `all`, the fully labelled subset: the decoder reads no
    labels, only `decoder_images(data)`, and its images are exactly `semi.all_train_x`."""
    return full if arm == "all" else labelled_only(semi)


def judged(rows: list[dict[str, Any]], images: torch.Tensor, judge: Any, org: torch.Tensor, device: torch.device) -> dict[str, float]:
    """The judge's figures on one strategy's generations: accepted by the filter (the run's headline),
    and all of them (`_all`: sets of the same size for every decoder, so FID and coverage compare)."""
    accepted = torch.tensor([r["accepted"] for r in rows], dtype=torch.bool)
    classes = torch.tensor([r["class"] for r in rows])
    logits, features = predict(judge, images, device)
    out: dict[str, float] = {"accept_rate": float(accepted.float().mean()), "accepted": int(accepted.sum())}
    for suffix, keep in (("", accepted), ("_all", torch.ones_like(accepted))):
        if int(keep.sum()) < 6:  # PRDC's k = 5 neighbours need more
            out |= {f"{name}{suffix}": float("nan") for name in ("neutral_acc_gen", "fid", "coverage", "precision")}
            continue
        quality = prdc(org, features[keep], nearest_k=5, device=device)
        out |= {
            f"neutral_acc_gen{suffix}": float((logits[keep].argmax(1) == classes[keep]).float().mean()),
            f"fid{suffix}": fid(org, features[keep]),
            f"coverage{suffix}": quality["coverage"],
            f"precision{suffix}": quality["precision"],
        }
    return out


def run_seed(base: StageContext, judge: Any, backbone: dict[str, Any], org: torch.Tensor, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    full, seed = base.data, base.spec.seed
    semi = full.with_labelled_fraction(args.fraction, seed=seed)
    labelled = labelled_only(semi)
    say(f"seed {seed}: {len(semi.train_x)} labelled + {len(semi.unlabelled_x)} unlabelled training images")
    started = time.perf_counter()
    encoder = train_classifier(labelled, args.classifier_epochs, seed)
    encoder_state = {k: encoder[k] for k in ("format", "encoder_config", "model")}
    say(f"seed {seed}: classifier val accuracy {encoder['accuracy']:.3f} ({time.perf_counter() - started:.0f} s)")
    started = time.perf_counter()
    lsdm_state, _ = train_lsdm_task(labelled, "enc", encoder_state, LSDMSettings(steps=args.lsdm_steps, seed=seed, log_every=max(1, args.lsdm_steps // 5)), device)
    say(f"seed {seed}: LSDM {args.lsdm_steps} steps ({time.perf_counter() - started:.0f} s)")

    classifier = load_classifier(encoder_state, device)
    ctx = dataclasses.replace(base, data=semi)  # the run's data: labels on the fraction only
    settings = GenerateSettings(per_class=args.per_class, seed=seed, strategies=STRATEGIES)
    thresholds = holdout_thresholds(ctx, classifier, settings, device)  # the paper's rule for both steps, as the README table was measured
    plan = sample_plan(ctx, settings)
    sources = TrainLatents(classifier, labelled.train_x, torch.cat([torch.from_numpy(s.ravel()) for s, _ in plan.values()]).numpy(), device)
    classes = sampled_classes(labelled.num_classes, settings.sampled_per_class)
    lsdm_latents = load_lsdm(lsdm_state, device).sample(classes, strategy_generator(settings, "lsdm")).float().cpu()

    epochs = {"labelled": args.decoder_epochs, "all": args.decoder_epochs}
    # As many optimiser steps as the `all` decoder takes, on the labelled images.
    epochs["labelled, same steps"] = round(args.decoder_epochs * math.ceil(len(semi.all_train_x) / 64) / math.ceil(len(labelled.train_x) / 64))
    order = DECODERS[seed % len(DECODERS):] + DECODERS[: seed % len(DECODERS)]  # interleaved: each decoder first on some seed
    rows = []
    for arm in order:
        data = decoder_data(arm, semi, full)
        images = decoder_images(data)
        assert len(images) == (len(semi.all_train_x) if arm == "all" else len(labelled.train_x)), "decoder_images() no longer gives these images"
        started = time.perf_counter()
        checkpoint, curve = train_decoder(data, "enc", encoder_state, DecoderTraining(epochs=epochs[arm], seed=seed), backbone, device=device)
        seconds = time.perf_counter() - started
        decoder = load_decoder(checkpoint, device)
        steps = epochs[arm] * math.ceil(len(images) / 64)
        say(f"seed {seed} decoder '{arm}': {len(images)} images, {epochs[arm]} epochs = {steps} steps, val MAE {curve[-1]['val_mae']:.4f} ({seconds:.0f} s)")
        convex_rows, convex_images = generate_for_trial(ctx, "enc", classifier, decoder, plan, sources, thresholds, device)
        lsdm_rows, lsdm_images = filtered_rows(ctx, "enc", "lsdm", classifier, decoder, lsdm_latents, classes, thresholds, device)
        for strategy, (part, generated) in {"convex": (convex_rows, convex_images), "lsdm": (lsdm_rows, lsdm_images)}.items():
            figures = judged(part, generated, judge, org, device)
            rows.append({"seed": seed, "decoder": arm, "strategy": strategy, "decoder_images": len(images), "decoder_epochs": epochs[arm],
                         "decoder_steps": steps, "decoder_seconds": seconds, "decoder_val_mae": curve[-1]["val_mae"],
                         "classifier_val_accuracy": encoder["accuracy"], **figures})
            say(f"  {strategy}: accepted {figures['accept_rate']:.2f}, neutral acc {figures['neutral_acc_gen']:.3f}, FID {figures['fid']:.2f}, "
                f"coverage {figures['coverage']:.3f}, precision {figures['precision']:.3f}; all: neutral acc {figures['neutral_acc_gen_all']:.3f}, "
                f"FID {figures['fid_all']:.2f}, coverage {figures['coverage_all']:.3f}")
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median, min and max over seeds per (strategy, decoder, metric), and `all` minus each labelled decoder, paired by seed."""
    out = []
    for strategy in STRATEGIES:
        for arm in DECODERS:
            mine = [r for r in rows if r["strategy"] == strategy and r["decoder"] == arm]
            for key, _, better_up in METRICS:
                values = [r[key] for r in mine if r[key] == r[key]]
                entry = {"strategy": strategy, "decoder": arm, "metric": key, "seeds": len(values)}
                if values:
                    entry |= {"median": statistics.median(values), "min": min(values), "max": max(values)}
                if arm != "all":
                    pairs = [(a[key], b[key]) for a in rows for b in rows if a["strategy"] == b["strategy"] == strategy and a["seed"] == b["seed"]
                             and a["decoder"] == "all" and b["decoder"] == arm and a[key] == a[key] and b[key] == b[key]]
                    if pairs:
                        diffs = [a - b for a, b in pairs]
                        entry |= {"all_minus_this_median": statistics.median(diffs), "all_better_in": sum((d > 0) == better_up and d != 0 for d in diffs), "pairs": len(diffs)}
                out.append(entry)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    for strategy in STRATEGIES:
        header = ["metric", *DECODERS, "all vs labelled (seeds better)", "all vs same steps (seeds better)"]
        body = []
        for key, label, _ in METRICS:
            cells = {e["decoder"]: e for e in summary if e["strategy"] == strategy and e["metric"] == key}
            fmt = (lambda v: f"{v:.4f}") if key == "decoder_val_mae" else (lambda v: f"{v:.3f}")
            row = [label]
            for arm in DECODERS:
                e = cells[arm]
                row.append(f"{fmt(e['median'])} [{fmt(e['min'])}, {fmt(e['max'])}]" if "median" in e else "-")
            for arm in ("labelled", "labelled, same steps"):
                e = cells[arm]
                row.append(f"{e['all_minus_this_median']:+.3f} ({e['all_better_in']}/{e['pairs']})" if "pairs" in e else "-")
            body.append(row)
        print(f"\n{strategy}: median [min, max] over seeds; all - other, median of the paired differences (seeds where all is better)")
        print(table(body, header))


def main() -> None:
    args = parse_args()
    if not mnist_available():
        sys.exit(f"needs the real MNIST copy in {SHARED_DATA}")
    torch.set_num_threads(args.threads)
    device = pick_device()
    info = machine()
    started = time.perf_counter()
    # The fixed, fully labelled subset; each seed labels its own fraction of it.
    full = load_dataset("mnist", SHARED_DATA, seed=0).subset(train=args.train, val=args.val, test=args.test, seed=0)
    spec = RunSpec(dataset="mnist", data_dir=str(SHARED_DATA), budget="smoke", name="semi-supervised", results_root=str(args.results),
                   space_path=str(default_space_path("mnist")), labelled_fraction=args.fraction, generators=STRATEGIES)
    base = StageContext(paths=RunPaths.plan(str(args.results), spec.dataset, spec.name), spec=spec, data=full, console=Console(stderr=True))
    judge_state, judge_path, _ = ensure_neutral(base)  # cached under --results after the first time
    judge = load_neutral(judge_state, device)
    backbone, _ = perceptual_backbone(base)
    _, org = predict(judge, full.test_x, device)
    say(f"judge: {judge_path}, test accuracy {judge_state['test_accuracy']:.3f}; perceptual backbone {backbone['name']} ({time.perf_counter() - started:.0f} s)")
    rows = []
    for seed in args.seeds:
        rows += run_seed(dataclasses.replace(base, spec=dataclasses.replace(spec, seed=seed)), judge, backbone, org, args, device)
        summary = summarise(rows)
        write_json(args.out, {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "judge": {"checkpoint": str(judge_path), "test_accuracy": judge_state["test_accuracy"], "train_images": judge_state.get("train_images")}, "seconds": time.perf_counter() - started, "rows": rows, "summary": summary})
    print_table(summary)
    print(f"\n{time.perf_counter() - started:.0f} s; written {args.out}")


if __name__ == "__main__":
    main()
