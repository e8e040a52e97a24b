"""The evaluate stage: neutral accuracy on the generations, FIDs, and a check that they are not copies.

Sets compared (section 5.4 of the paper): Org = the test split, Recon = decoder(encoder(Org)),
Gen = the accepted generations of `generations.parquet`. Features for the in-domain FID come
from the neutral ResNet (`neutral.py`), never the ReGene classifier, which would be circular;
Inception FID is added when `--inception-weights` is given.

`evaluation.parquet` has one row per metric, columns `EVALUATION_COLUMNS` (results.py); every
column and every metric is described in docs/results.md. `scope` says what a row aggregates over:
`run` (all n and classes), `n`, `class`, or `n_class`.

Last, with >= 3 promoted encoders, `proxy.py` writes `proxy.parquet`: how well each search-time
score ranks the encoders the way these results (and the decoder's) do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch
from pytorch_msssim import ssim

from ..errors import UserError
from ..figures import decode_png, grid_png
from ..models import load_classifier
from ..results import EVALUATION_COLUMNS, read_parquet, write_bytes
from ..runtime import concat, encode_all, infer, load_checkpoint, pick_device, to_float
from .context import StageContext
from .decoder import decode_all, load_decoder
from .fid import fid, inception_features, load_inception
from .losses import ssim_window
from .neutral import NeutralResNet, ensure_neutral, load_neutral, predict
from .proxy import headline_rows, verdict, write_agreement

NN_CHUNK = 4096


@dataclass(frozen=True)
class EvaluateSettings:
    """Inception FID runs only with a weights file, on at most `inception_images` per set."""

    inception_weights: str | None = None
    inception_images: int = 2000
    novelty_samples: int = 256
    figure_pairs: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if self.inception_images < 2:
            raise UserError(f"inception images must be >= 2 (FID needs two samples), got {self.inception_images}")
        if self.novelty_samples < 1:
            raise UserError(f"novelty samples must be >= 1, got {self.novelty_samples}")

    @classmethod
    def from_spec(cls, spec: Any) -> EvaluateSettings:
        return cls(
            inception_weights=spec.inception_weights,
            inception_images=spec.inception_images,
            novelty_samples=spec.novelty_samples,
            seed=spec.seed,
        )


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each uint8 query image, the index of and pixel L2 distance to its nearest reference image."""
    q = to_float(queries, device).flatten(1)
    best_d = torch.full((len(q),), float("inf"), device=device)
    best_i = torch.zeros(len(q), dtype=torch.int64, device=device)
    for start in range(0, len(reference), NN_CHUNK):
        d = torch.cdist(q, to_float(reference[start : start + NN_CHUNK], device).flatten(1))
        value, index = d.min(1)
        closer = value < best_d
        best_d = torch.where(closer, value, best_d)
        best_i = torch.where(closer, index + start, best_i)
    return best_i.cpu(), best_d.cpu()


def ssim_pairs(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-pair SSIM of two equal-length uint8 image batches."""

    def pairs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, enabled=False):  # SSIM in fp32 on every device
            return ssim(to_float(x, device), to_float(y, device), data_range=1.0, size_average=False, win_size=ssim_window(a.shape[-1])).cpu()

    return concat(infer(pairs, a, b, device=device), torch.zeros(0))


def pixel_mae(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 image batches, pixels in [0, 1]."""
    sums = infer(lambda x, y: float((x.float() - y.float()).abs().sum()), a, b, device=torch.device("cpu"))
    return sum(sums) / 255.0 / max(1, a.numel())


def _sample(count: int, limit: int, seed: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit]


class Metrics:
    """Accumulates evaluation.parquet rows for one dataset."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.rows: list[dict[str, Any]] = []

    def add(self, metric: str, value: float, *, trial_id: str | None = None, n: int | None = None, cls: int | None = None) -> float:
        scope = ("n_class" if cls is not None else "n") if n is not None else ("class" if cls is not None else "run")
        self.rows.append({"dataset": self.dataset, "trial_id": trial_id, "scope": scope, "n": n, "class": cls, "metric": metric, "value": float(value)})
        return float(value)


def generations_of(ctx: StageContext, trial_id: str) -> dict[str, Any]:
    """One trial's generations: n, class and accepted as tensors, accepted images decoded from PNG."""
    table = read_parquet(ctx.paths.generations)
    mask = [t == trial_id for t in table.column("trial_id").to_pylist()]
    table = table.filter(pa.array(mask, type=pa.bool_()))
    accepted = torch.tensor(table.column("accepted").to_pylist(), dtype=torch.bool)
    pngs = [png for png, ok in zip(table.column("image_png").to_pylist(), accepted.tolist(), strict=True) if ok]
    shape = (0, ctx.data.channels, ctx.data.image_size, ctx.data.image_size)
    return {
        "n": torch.tensor(table.column("n").to_pylist(), dtype=torch.int64),
        "class": torch.tensor(table.column("class").to_pylist(), dtype=torch.int64),
        "accepted": accepted,
        "images": torch.stack([decode_png(p, ctx.data.channels) for p in pngs]) if pngs else torch.zeros(shape, dtype=torch.uint8),
    }


def fid_metrics(m: Metrics, kind: str, trial_id: str, org: torch.Tensor, recon: torch.Tensor, gen: torch.Tensor, gen_n: torch.Tensor) -> dict[str, float]:
    """Org vs Gen, Org vs Recon, Recon vs Gen (Gen over all n, then per n) on one feature space."""
    out = {f"fid_{kind}_org_recon": m.add(f"fid_{kind}_org_recon", fid(org, recon), trial_id=trial_id)}
    if len(gen) >= 2:
        out[f"fid_{kind}_org_gen"] = m.add(f"fid_{kind}_org_gen", fid(org, gen), trial_id=trial_id)
        out[f"fid_{kind}_recon_gen"] = m.add(f"fid_{kind}_recon_gen", fid(recon, gen), trial_id=trial_id)
    for n in sorted(set(gen_n.tolist())):
        part = gen[gen_n == n]
        if len(part) >= 2:
            m.add(f"fid_{kind}_org_gen", fid(org, part), trial_id=trial_id, n=n)
            m.add(f"fid_{kind}_recon_gen", fid(recon, part), trial_id=trial_id, n=n)
    return out


def class_metrics(m: Metrics, trial_id: str, gens: dict[str, Any], neutral: NeutralResNet, device: torch.device) -> tuple[torch.Tensor, dict[str, Any]]:
    """Acceptance rates and the neutral classifier's accuracy on accepted generations; returns their features."""
    summary: dict[str, Any] = {"accept_rate": m.add("accept_rate", gens["accepted"].float().mean(), trial_id=trial_id)}
    logits, features = predict(neutral, gens["images"], device)
    labels, ns = gens["class"][gens["accepted"]], gens["n"][gens["accepted"]]
    correct = (logits.argmax(1) == labels).float()
    if len(correct):
        summary["neutral_acc_gen"] = m.add("neutral_acc_gen", correct.mean(), trial_id=trial_id)
    summary["neutral_acc_gen_by_n"], summary["accept_rate_by_n"] = {}, {}
    for n in sorted(set(gens["n"].tolist())):
        in_n = gens["n"] == n
        summary["accept_rate_by_n"][str(n)] = m.add("accept_rate", gens["accepted"][in_n].float().mean(), trial_id=trial_id, n=n)
        m.add("accepted_count", int((ns == n).sum()), trial_id=trial_id, n=n)
        if (ns == n).any():
            summary["neutral_acc_gen_by_n"][str(n)] = m.add("neutral_acc_gen", correct[ns == n].mean(), trial_id=trial_id, n=n)
        for c in sorted(set(gens["class"][in_n].tolist())):
            m.add("accept_rate", gens["accepted"][in_n & (gens["class"] == c)].float().mean(), trial_id=trial_id, n=n, cls=c)
            if ((ns == n) & (labels == c)).any():
                m.add("neutral_acc_gen", correct[(ns == n) & (labels == c)].mean(), trial_id=trial_id, n=n, cls=c)
    for c in sorted(set(labels.tolist())):
        m.add("neutral_acc_gen", correct[labels == c].mean(), trial_id=trial_id, cls=c)
    return features, summary


def test_novelty(ctx: StageContext, settings: EvaluateSettings, device: torch.device) -> dict[str, float]:
    """How close genuinely new (test) images come to their nearest training image: the scale for the
    generations' novelty. It depends on no encoder, so it is measured once per stage."""
    queries = ctx.data.test_x[_sample(len(ctx.data.test_x), settings.novelty_samples, settings.seed)]
    if not len(queries):
        return {}
    index, distance = nearest_neighbours(queries, ctx.data.train_x, device)
    similarity = ssim_pairs(queries, ctx.data.train_x[index], device)
    return {"novelty_test_nn_l2_mean": float(distance.mean()), "novelty_test_nn_ssim_mean": float(similarity.mean())}


def novelty_metrics(
    ctx: StageContext, m: Metrics, trial_id: str, gen: torch.Tensor, settings: EvaluateSettings, device: torch.device, test_scale: dict[str, float]
) -> dict[str, float]:
    """Nearest training image of sampled generations (with `test_novelty` for scale); writes figures/<trial>/novelty.png."""
    train = ctx.data.train_x
    summary = {name: m.add(name, value, trial_id=trial_id) for name, value in test_scale.items()}
    queries = gen[_sample(len(gen), settings.novelty_samples, settings.seed)]
    if not len(queries):
        return summary
    index, distance = nearest_neighbours(queries, train, device)
    similarity = ssim_pairs(queries, train[index], device)
    summary["novelty_nn_l2_mean"] = m.add("novelty_nn_l2_mean", distance.mean(), trial_id=trial_id)
    summary["novelty_nn_ssim_mean"] = m.add("novelty_nn_ssim_mean", similarity.mean(), trial_id=trial_id)
    summary["novelty_nn_l2_min"] = m.add("novelty_nn_l2_min", distance.min(), trial_id=trial_id)
    summary["novelty_nn_ssim_max"] = m.add("novelty_nn_ssim_max", similarity.max(), trial_id=trial_id)
    k = settings.figure_pairs
    write_bytes(grid_png([list(queries[:k]), list(train[index[:k]])], row_labels=["generated", "nearest"]), ctx.paths.novelty_figure(trial_id))
    return summary


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    settings = EvaluateSettings.from_spec(ctx.spec)
    device = pick_device()
    data = ctx.data
    # Load the Inception file first, so a bad path fails before minutes of work.
    inception = load_inception(settings.inception_weights) if settings.inception_weights else None
    neutral_state, neutral_path, cached = ensure_neutral(ctx)
    neutral = load_neutral(neutral_state, device)
    m = Metrics(ctx.spec.dataset.name)
    test_logits, org_features = predict(neutral, data.test_x, device)
    test_accuracy = m.add("neutral_test_accuracy", (test_logits.argmax(1) == data.test_y).float().mean())
    ctx.say(f"evaluate: neutral ResNet-{neutral.config.depth} ({'cached' if cached else 'trained now'}), test accuracy {test_accuracy:.3f}")
    org_inception = None
    if inception is not None:
        org_sample = data.test_x[_sample(len(data.test_x), settings.inception_images, settings.seed)]
        org_inception = inception_features(inception, org_sample, device)
    test_scale = test_novelty(ctx, settings, device)
    trials = {}
    for trial_id, classifier_path in ctx.promoted_checkpoints().items():
        classifier = load_classifier(load_checkpoint(classifier_path, "run the search stage first"), device)
        decoder = load_decoder(load_checkpoint(ctx.paths.decoder_checkpoint(trial_id), "run the decoder stage first"), device)
        recon = decode_all(decoder, encode_all(classifier, data.test_x, device), device)
        recon_logits, recon_features = predict(neutral, recon, device)
        summary = {
            "neutral_acc_recon": m.add("neutral_acc_recon", (recon_logits.argmax(1) == data.test_y).float().mean(), trial_id=trial_id),
            "recon_mae": m.add("recon_mae", pixel_mae(recon, data.test_x), trial_id=trial_id),
            "recon_ssim": m.add("recon_ssim", ssim_pairs(recon, data.test_x, device).mean(), trial_id=trial_id),
        }
        gens = generations_of(ctx, trial_id)
        gen_features, class_summary = class_metrics(m, trial_id, gens, neutral, device)
        summary.update(class_summary)
        gen_n = gens["n"][gens["accepted"]]
        summary.update(fid_metrics(m, "neutral", trial_id, org_features, recon_features, gen_features, gen_n))
        if inception is not None:
            recon_sample = recon[_sample(len(recon), settings.inception_images, settings.seed)]
            gen_pick = _sample(len(gens["images"]), settings.inception_images, settings.seed)
            summary.update(
                fid_metrics(
                    m,
                    "inception",
                    trial_id,
                    org_inception,
                    inception_features(inception, recon_sample, device),
                    inception_features(inception, gens["images"][gen_pick], device),
                    gen_n[gen_pick],
                )
            )
        summary.update(novelty_metrics(ctx, m, trial_id, gens["images"], settings, device, test_scale))
        trials[trial_id] = summary
        ctx.console.print(
            f"evaluate {trial_id}: neutral acc on generations {summary.get('neutral_acc_gen', float('nan')):.3f}, "
            f"in-domain FID org/gen {summary.get('fid_neutral_org_gen', float('nan')):.2f}, "
            f"org/recon {summary['fid_neutral_org_recon']:.2f}, recon/gen {summary.get('fid_neutral_recon_gen', float('nan')):.2f}"
        )
    ctx.paths.write_table(m.rows, EVALUATION_COLUMNS, ctx.paths.evaluation)
    agreement, rows = write_agreement(ctx.paths, ctx.spec.dataset.name)
    for line in [verdict(r) for r in headline_rows(rows)] if agreement["written"] else [agreement["reason"]]:
        ctx.console.print(f"rank agreement, {line}", markup=False)
    return {
        "proxy": agreement,
        "neutral": {"depth": neutral.config.depth, "test_accuracy": test_accuracy, "checkpoint": str(neutral_path), "from_cache": cached},
        "inception": settings.inception_weights is not None,
        "trials": trials,
    }
