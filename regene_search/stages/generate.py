"""The generate stage: new images per class from convex combinations of same-class latents.

For class c and each n in `GenerateSettings.ns`, n distinct training images of class c are
encoded, their latents combined with convex weights (1/n as in the paper, or Dirichlet(alpha)),
and the combination decoded. Lemma 1 of the paper: a convex combination of latents on one side
of the head's separating hyperplanes stays there, so the head still says c.

The paper's two-step filter (section 5.2) keeps a generation only if (i) the head's softmax
confidence for c on the combined latent and (ii) the classifier's confidence for c on the
decoded image both reach the threshold of class c: by default the mean confidence of class c
over the holdout (validation) images of class c.

`generations.parquet` has one row per generated image, columns `GENERATION_COLUMNS` (results.py),
each described in docs/results.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from .. import plots
from ..errors import UserError
from ..figures import encode_png, grid_png, strip_png
from ..models import Classifier, load_classifier
from ..results import GENERATION_COLUMNS, write_bytes
from ..runtime import autocast, concat, encode_all, infer, load_checkpoint, pick_device, to_float
from .context import StageContext
from .decoder import LatentDecoder, decode_all, load_decoder

WEIGHT_KINDS = ("uniform", "dirichlet")
INTERPOLATION_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))


@dataclass(frozen=True)
class GenerateSettings:
    """What to generate: `per_class` combinations for each class and each n in `ns`.

    `threshold` None uses the per-class holdout mean confidence (the paper's default); a number
    in [0, 1] applies to every class. `grid_columns` accepted images per class go in the figures.
    """

    ns: tuple[int, ...] = (2, 3, 5)
    per_class: int = 64
    weights: str = "uniform"
    dirichlet_alpha: float = 1.0
    threshold: float | None = None
    seed: int = 0
    grid_columns: int = 10

    def __post_init__(self) -> None:
        if not self.ns or min(self.ns) < 2:
            raise UserError(f"generate n values must all be >= 2, got {self.ns}")
        if self.per_class < 1:
            raise UserError(f"generations per class must be >= 1, got {self.per_class}")
        if self.weights not in WEIGHT_KINDS:
            raise UserError(f"generate weights must be one of {', '.join(WEIGHT_KINDS)}, got {self.weights!r}")
        if not self.dirichlet_alpha > 0:
            raise UserError(f"dirichlet alpha must be > 0, got {self.dirichlet_alpha}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"generate threshold must be in [0, 1], got {self.threshold}")

    @classmethod
    def from_spec(cls, spec: Any) -> GenerateSettings:
        return cls(
            ns=tuple(spec.generate_n),
            per_class=spec.generate_per_class,
            weights=spec.generate_weights,
            dirichlet_alpha=spec.dirichlet_alpha,
            threshold=spec.generate_threshold,
            seed=spec.seed,
        )


def convex_weights(rng: np.random.Generator, count: int, n: int, *, kind: str = "uniform", alpha: float = 1.0) -> np.ndarray:
    """(count, n) convex weights: every row >= 0 and summing to 1."""
    if kind == "uniform":
        return np.full((count, n), 1.0 / n)
    if kind == "dirichlet":
        weights = rng.dirichlet(np.full(n, alpha), size=count)
        # Tiny alphas can underflow a whole row to zeros; such a row falls back to 1/n.
        sums = weights.sum(1, keepdims=True)
        return np.where(sums > 0, weights / np.where(sums > 0, sums, 1.0), 1.0 / n)
    raise ValueError(f"unknown weight kind {kind!r}; choose from {', '.join(WEIGHT_KINDS)}")


def true_class_confidence(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each row's class."""
    return logits.float().softmax(1).gather(1, classes.view(-1, 1)).squeeze(1)


def class_thresholds(confidence: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean confidence of each class over the holdout samples of that class.

    A class with no holdout sample gets NaN, which no confidence reaches: it accepts nothing.
    """
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, confidence.double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def two_step_accept(latent_confidence: torch.Tensor, image_confidence: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The paper's filter: both confidences must reach the (per-sample) class threshold."""
    return (latent_confidence >= threshold) & (image_confidence >= threshold)


def image_logits(classifier: Classifier, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Classifier logits of uint8 images, float32 on the CPU."""
    classifier.eval()
    parts = infer(lambda x: classifier(to_float(x, device)).float().cpu(), images, device=device)
    return concat(parts, torch.zeros(0, classifier.config.num_classes))


@torch.no_grad()
def head_logits(classifier: Classifier, latents: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        return classifier.head(latents.to(device)).float().cpu()


def holdout_thresholds(ctx: StageContext, classifier: Classifier, settings: GenerateSettings, device: torch.device) -> torch.Tensor:
    data = ctx.data
    if settings.threshold is not None:
        return torch.full((data.num_classes,), settings.threshold, dtype=torch.float64)
    confidence = true_class_confidence(image_logits(classifier, data.val_x, device), data.val_y)
    return class_thresholds(confidence, data.val_y, data.num_classes)


def sample_plan(ctx: StageContext, settings: GenerateSettings) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """(class, n) -> (source indices (per_class, n), distinct within a row; convex weights (per_class, n))."""
    data = ctx.data
    rng = np.random.default_rng([settings.seed, 7])
    plan = {}
    for c in range(data.num_classes):
        members = (data.train_y == c).nonzero().squeeze(1).numpy()
        for n in settings.ns:
            if len(members) < n:
                ctx.console.print(f"generate: class {escape(data.classes[c])} has {len(members)} training images, fewer than n={n}; skipped")
                continue
            sources = np.stack([rng.choice(members, size=n, replace=False) for _ in range(settings.per_class)])
            plan[(c, n)] = (sources, convex_weights(rng, settings.per_class, n, kind=settings.weights, alpha=settings.dirichlet_alpha))
    return plan


def interpolation_pairs(ctx: StageContext, seed: int) -> dict[int, np.ndarray]:
    """class -> two distinct training images of that class, the ends of its interpolation strip."""
    rng = np.random.default_rng([seed, 11])
    pairs = {}
    for c in range(ctx.data.num_classes):
        members = (ctx.data.train_y == c).nonzero().squeeze(1).numpy()
        if len(members) >= 2:
            pairs[c] = rng.choice(members, size=2, replace=False)
    return pairs


class TrainLatents:
    """Latents of only the training images a plan uses (not the whole split), by train-split index."""

    def __init__(self, classifier: Classifier, images: torch.Tensor, indices: np.ndarray, device: torch.device) -> None:
        self.index = np.unique(indices)
        self.latents = encode_all(classifier, images[torch.from_numpy(self.index)], device).cpu()

    def __getitem__(self, indices: np.ndarray) -> torch.Tensor:
        return self.latents[torch.from_numpy(np.searchsorted(self.index, indices))]


def generate_for_trial(
    ctx: StageContext,
    trial_id: str,
    classifier: Classifier,
    decoder: LatentDecoder,
    plan: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    latents: TrainLatents,
    thresholds: torch.Tensor,
    device: torch.device,
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Decode and filter every planned combination: (rows, their uint8 images)."""
    data = ctx.data
    rows, all_images = [], []
    for (c, n), (sources, weights) in plan.items():
        combined = (torch.from_numpy(weights).float().unsqueeze(2) * latents[sources]).sum(1)
        labels = torch.full((len(combined),), c, dtype=torch.int64)
        latent_conf = true_class_confidence(head_logits(classifier, combined, device), labels)
        images = decode_all(decoder, combined, device)
        image_conf = true_class_confidence(image_logits(classifier, images, device), labels)
        threshold = float(thresholds[c])
        accepted = two_step_accept(latent_conf, image_conf, torch.full_like(latent_conf, threshold))
        for i in range(len(combined)):
            rows.append(
                {
                    "trial_id": trial_id,
                    "class": c,
                    "class_name": data.classes[c],
                    "n": n,
                    "source_indices": sources[i].tolist(),
                    "weights": weights[i].tolist(),
                    "latent_confidence": float(latent_conf[i]),
                    "image_confidence": float(image_conf[i]),
                    "threshold": threshold,
                    "accepted": bool(accepted[i]),
                    "image_png": encode_png(images[i]),
                }
            )
        all_images.append(images)
    empty = torch.zeros(0, data.channels, data.image_size, data.image_size, dtype=torch.uint8)
    return rows, torch.cat(all_images) if all_images else empty


def acceptance(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Acceptance rates overall, per n, and per n and class (JSON keys are strings)."""

    def rate(selected: list[dict[str, Any]]) -> float | None:
        return sum(r["accepted"] for r in selected) / len(selected) if selected else None

    ns = sorted({r["n"] for r in rows})
    classes = sorted({r["class"] for r in rows})
    return {
        "generated": len(rows),
        "accepted": sum(r["accepted"] for r in rows),
        "accept_rate": rate(rows),
        "accept_rate_by_n": {str(n): rate([r for r in rows if r["n"] == n]) for n in ns},
        "accept_rate_by_n_class": {str(n): {str(c): rate([r for r in rows if r["n"] == n and r["class"] == c]) for c in classes} for n in ns},
    }


def write_figures(
    ctx: StageContext,
    trial_id: str,
    rows: list[dict[str, Any]],
    images: torch.Tensor,
    pairs: dict[int, np.ndarray],
    latents: TrainLatents,
    decoder: LatentDecoder,
    settings: GenerateSettings,
    device: torch.device,
) -> list[str]:
    """Per n a grid (a row per class, accepted generations), and per class an interpolation strip."""
    data = ctx.data
    written = []
    for n in settings.ns:
        grid = [
            [images[i] for i, r in enumerate(rows) if r["n"] == n and r["class"] == c and r["accepted"]][: settings.grid_columns]
            for c in range(data.num_classes)
        ]
        if any(grid):
            written.append(ctx.paths.generation_grid(trial_id, n))
            write_bytes(grid_png(grid, row_labels=list(data.classes)), written[-1])
    ratios = torch.tensor(INTERPOLATION_RATIOS).view(-1, 1)
    for c, (a, b) in pairs.items():
        ends = latents[np.array([a, b])]
        between = decode_all(decoder, (1 - ratios) * ends[0] + ratios * ends[1], device)
        strip = [data.train_x[a], *between, data.train_x[b]]
        written.append(ctx.paths.interpolation_strip(trial_id, c))
        write_bytes(strip_png(strip, labels=["A", *map(str, INTERPOLATION_RATIOS), "B"]), written[-1])
    return [path.relative_to(ctx.paths.dir) for path in written]


def generate_stage(ctx: StageContext) -> dict[str, Any]:
    settings = GenerateSettings.from_spec(ctx.spec)
    device = pick_device()
    # The same sources and weights for every promoted encoder, so their generations compare.
    plan = sample_plan(ctx, settings)
    pairs = interpolation_pairs(ctx, settings.seed)
    used = np.concatenate([np.zeros(0, dtype=np.int64), *(sources.ravel() for sources, _ in plan.values()), *pairs.values()])
    all_rows, summary = [], {}
    for trial_id, classifier_path in ctx.promoted_checkpoints().items():
        classifier = load_classifier(load_checkpoint(classifier_path, "run the search stage first"), device)
        decoder = load_decoder(load_checkpoint(ctx.paths.decoder_checkpoint(trial_id), "run the decoder stage first"), device)
        latents = TrainLatents(classifier, ctx.data.train_x, used, device)
        thresholds = holdout_thresholds(ctx, classifier, settings, device)
        rows, images = generate_for_trial(ctx, trial_id, classifier, decoder, plan, latents, thresholds, device)
        figures = write_figures(ctx, trial_id, rows, images, pairs, latents, decoder, settings, device)
        summary[trial_id] = {**acceptance(rows), "thresholds": thresholds.tolist(), "figures": figures}
        ctx.console.print(
            f"generate {trial_id}: {summary[trial_id]['accepted']}/{len(rows)} accepted; by n "
            + ", ".join(f"{n}: {rate:.2f}" for n, rate in summary[trial_id]["accept_rate_by_n"].items())
        )
        all_rows += rows
    ctx.paths.write_table(all_rows, GENERATION_COLUMNS, ctx.paths.generations)
    for trial_id, info in summary.items():  # figures last: the generations are saved whatever a figure does
        mine = [r for r in all_rows if r["trial_id"] == trial_id]
        info["figures"] += [path.relative_to(ctx.paths.dir) for path in plots.save_each(plots.generation_figures(ctx.paths, trial_id, mine), ctx.say)]
    return {"weights": settings.weights, "ns": list(settings.ns), "per_class": settings.per_class, "trials": summary}
