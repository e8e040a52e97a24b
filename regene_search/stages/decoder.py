"""The decoder stage: for each promoted encoder, train a full decoder on its frozen latents.

The decoder sees only latents of the train split (no labels), computed once. Latents are
standardised per unit first; the standardisation is affine, so a convex combination of latents
decodes the same as the combination of the standardised latents, and `LatentDecoder` folds it in.
Each encoder's decoder trains in its own Ray task with the trial resources (so it lands on a
GPU when the cluster has one); without Ray it trains in-process.

With `lr-livae` among the run's generators, each promoted encoder also gets the lr-livae decoder
(`generators/lr_livae.py`): it decodes [classifier latent z_s, label-irrelevant code z_u] and trains
with its VAE-style encoder of z_u, under the same losses, schedule and epochs plus the KL of z_u.
Both decoders train with one epoch loop (`train_epoch`) and one per-batch loss
(`losses.reconstruction_loss`), each in its own Ray task.

`decoder.parquet` has one row per (trial_id, decoder, epoch), columns `DECODER_COLUMNS` (results.py),
each described in docs/results.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_msssim import ssim
from rich.markup import escape
from torch import nn

from .. import plots
from ..data.dataset import ImageData
from ..figures import grid_png
from ..models import Decoder, DecoderConfig, load_classifier
from ..results import DECODER_COLUMNS
from ..runtime import autocast, concat, encode_all, infer, load_checkpoint, lr_schedule, on_device, pick_device, run_tasks, save_checkpoint, to_float
from ..storage import Location
from .context import StageContext
from .losses import NEUTRAL_BACKBONE, VGG_BACKBONE, LossSchedule, build_taps, find_vgg_weights, load_vgg_state, reconstruction_loss, ssim_window
from .neutral import ensure_neutral

DECODER_FORMAT = "regene-search/decoder-v1"
# Twice the probe's width or more. 16 at 28 px is where MNIST quality saturates for its cost on a
# CPU (measured: val MAE 0.052 vs 0.049 at 32, 2.6x faster); colour images get more.
WIDTH_BY_SIZE = {28: 16, 32: 32, 64: 64}
WARMUP_FRACTION = 0.125
# The decoders the stage can train: ReGene's on the classifier latent, and with `lr-livae` among the
# run's generators also the lr-livae one on [classifier latent, label-irrelevant code].
REGENE = "regene"
LR_LIVAE = "lr-livae"
DECODER_KINDS = (REGENE, LR_LIVAE)


@dataclass(frozen=True)
class DecoderTraining:
    """How each decoder trains. `base_width` None picks it by resolution (`WIDTH_BY_SIZE`)."""

    epochs: int
    batch_size: int = 64
    lr: float = 5e-3
    base_width: int | None = None
    schedule: LossSchedule = LossSchedule()
    seed: int = 0

    def width_for(self, image_size: int) -> int:
        return self.base_width or WIDTH_BY_SIZE[image_size]


class LatentDecoder(nn.Module):
    """A `models.Decoder` behind the per-unit latent standardisation it was trained with."""

    def __init__(self, config: DecoderConfig, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.decoder = Decoder(config)
        self.register_buffer("mean", mean.reshape(1, -1).clone())
        self.register_buffer("std", std.reshape(1, -1).clone())

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder((latents - self.mean) / self.std)


def load_decoder(state: dict[str, Any], device: torch.device | str = "cpu") -> LatentDecoder:
    """Rebuild the decoder of a checkpoint dict (as loaded with weights_only=True), in eval mode."""
    if state.get("format") != DECODER_FORMAT:
        raise ValueError(f"not a regene-search decoder checkpoint (format={state.get('format')!r})")
    model = LatentDecoder(DecoderConfig(**state["decoder_config"]), state["latent_mean"], state["latent_std"])
    model.decoder.load_state_dict(state["model"])
    return on_device(model, device).eval()


def decode_all(decoder: LatentDecoder, latents: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Latents -> uint8 (N, C, H, W) images on the CPU, rounded as a PNG would store them."""
    decoder.eval()
    parts = infer(lambda z: decoder(z.to(device)).float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu(), latents, device=device)
    config = decoder.decoder.config
    return concat(parts, torch.zeros(0, config.channels, config.image_size, config.image_size, dtype=torch.uint8))


def reconstruction_quality(decoder: LatentDecoder, latents: torch.Tensor, images: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(MAE, mean SSIM) of decoded `latents` against the uint8 `images` they came from."""
    decoder.eval()

    def errors(z: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
        recon, target = decoder(z.to(device)).float(), to_float(x, device)
        with torch.autocast(device.type, enabled=False):  # SSIM in fp32 on every device
            similarity = ssim(recon, target, data_range=1.0, size_average=False, win_size=ssim_window(target.shape[-1]))
        return float((recon - target).abs().sum()), float(similarity.sum())

    parts = infer(errors, latents, images, device=device)
    return sum(a for a, _ in parts) / max(1, images.numel()), sum(s for _, s in parts) / max(1, len(images))


def decoder_images(data: ImageData) -> torch.Tensor:
    """The images every decoder trains on (uint8): the whole train split, labelled or not (a decoder
    needs no labels; issue 14's semi-supervised runs). The one place that chooses them."""
    return data.all_train_x


def train_epoch(
    batch_loss: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    optimiser: torch.optim.Optimizer,
    count: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    batch_size: int,
    scheduler: Any = None,
) -> dict[str, float]:
    """One pass over `count` examples in batches of a random order drawn from the seeded CPU `generator`.

    `batch_loss(indices)` gives a batch's loss terms (its `total` is minimised; indices on `device`).
    Returns each term's mean over the examples. Put the models in training mode first.
    """
    sums: dict[str, torch.Tensor] = {}  # kept on the device: no sync per step
    for idx in torch.randperm(count, generator=generator).to(device).split(batch_size):
        terms = batch_loss(idx)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, torch.zeros((), device=device)) + value.detach().float() * len(idx)
    return {name: float(value) / count for name, value in sums.items()}


def train_one_epoch(
    decoder: LatentDecoder,
    optimiser: torch.optim.Optimizer,
    latents: torch.Tensor,
    images: torch.Tensor,
    weights: tuple[float, float, float],
    generator: torch.Generator,
    *,
    taps: nn.Module | None = None,
    batch_size: int = 64,
    scheduler: Any = None,
) -> dict[str, float]:
    """One ReGene decoder epoch over (N, p) frozen `latents` and their uint8 `images` (on the decoder's device)."""
    device = latents.device
    decoder.train()

    def batch_loss(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        target = to_float(images[idx], device)
        with autocast(device):
            recon = decoder(latents[idx])
        return reconstruction_loss(recon, target, weights, taps)

    return train_epoch(batch_loss, optimiser, len(latents), generator, device, batch_size=batch_size, scheduler=scheduler)


def train_decoder(
    data: ImageData,
    trial_id: str,
    encoder_state: dict[str, Any],
    training: DecoderTraining,
    backbone: dict[str, Any],
    kind: str = REGENE,
    device: torch.device | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one decoder of `kind` (`DECODER_KINDS`) on the frozen latents of `encoder_state`; return
    (checkpoint, per-epoch rows). `report` gets a line per epoch.

    `regene` decodes the classifier latent z_s. `lr-livae` decodes [z_s, z_u] and trains its nuisance
    encoder E_u (z_u's posterior) with it: the same losses, schedule and epochs, plus the KL of z_u.
    """
    if kind not in DECODER_KINDS:
        raise ValueError(f"unknown decoder {kind!r}; one of {DECODER_KINDS}")
    device = device or pick_device()
    encoder = load_classifier(encoder_state, device)
    train_x = decoder_images(data)
    train_z = encode_all(encoder, train_x, device)
    val_z = encode_all(encoder, data.val_x, device)
    encoder_config = encoder.config
    del encoder
    mean, std = train_z.mean(0), train_z.std(0).clamp_min(1e-6)
    config = DecoderConfig(image_size=data.image_size, channels=data.channels, latent_dim=train_z.shape[1], base_width=training.width_for(data.image_size))
    torch.manual_seed(training.seed)
    if kind == REGENE:
        model, nuisance = on_device(LatentDecoder(config, mean, std), device), None
        parameters = list(model.parameters())
    else:
        from ..generators import lr_livae  # it builds on this module, so it is imported here, not at the top

        model = on_device(lr_livae.split_decoder(config, mean, std, lr_livae.U_DIM), device)
        encoder_config = lr_livae.nuisance_config(encoder_config)
        nuisance = on_device(lr_livae.NuisanceEncoder(encoder_config, lr_livae.U_DIM), device)
        kl_weight = lr_livae.kl_weight_for(data.channels, data.image_size)
        parameters = [*model.parameters(), *nuisance.parameters()]
    taps = on_device(build_taps(backbone), device)
    optimiser = torch.optim.Adam(parameters, lr=training.lr)
    schedule = lr_schedule(optimiser, training.epochs * math.ceil(len(train_z) / training.batch_size), warmup_fraction=WARMUP_FRACTION, cosine_from_start=True)
    train_x = train_x.to(device)
    train_z = train_z.to(device)
    gen = torch.Generator().manual_seed(training.seed + 29)
    rows = []
    for epoch in range(1, training.epochs + 1):
        started = time.perf_counter()
        weights = training.schedule.weights(epoch, training.epochs)
        step = dict(taps=taps, batch_size=training.batch_size, scheduler=schedule)
        if nuisance is None:
            means = train_one_epoch(model, optimiser, train_z, train_x, weights, gen, **step)
            val_mae, val_ssim = reconstruction_quality(model, val_z, data.val_x, device)
        else:
            means = lr_livae.train_one_epoch(nuisance, model, optimiser, train_z, train_x, weights, kl_weight, gen, **step)
            # Validation reconstructs from [z_s, E_u's mean code]: the decoder's best guess of the image.
            val_codes = torch.cat([val_z.cpu(), lr_livae.posterior_means(nuisance, data.val_x, device)], 1)
            val_mae, val_ssim = reconstruction_quality(model, val_codes, data.val_x, device)
        rows.append(
            {
                "trial_id": trial_id,
                "decoder": kind,
                "epoch": epoch,
                "loss_mae": means["mae"],
                "loss_ssim": means["ssim"],
                "loss_perceptual": means["perceptual"],
                "loss_kl": means.get("kl"),
                "loss_total": means["total"],
                "w_mae": weights[0],
                "w_ssim": weights[1],
                "w_perceptual": weights[2],
                "w_kl": None if nuisance is None else kl_weight,
                "val_mae": val_mae,
                "val_ssim": val_ssim,
                "perceptual_backbone": backbone["name"],
                "seconds": time.perf_counter() - started,
            }
        )
        if report:
            report(
                f"{'decoder' if kind == REGENE else kind + ' decoder'} {trial_id}: epoch {epoch}/{training.epochs}  loss {means['total']:.4f}  "
                f"val MAE {val_mae:.4f}  val SSIM {val_ssim:.3f}  {rows[-1]['seconds']:.1f} s"
            )
    checkpoint = {
        "format": DECODER_FORMAT,
        "decoder": kind,
        "encoder_trial_id": trial_id,
        "decoder_config": dataclasses.asdict(model.decoder.config),
        "model": {k: v.cpu() for k, v in model.decoder.state_dict().items()},
        "latent_mean": model.mean.reshape(-1).cpu(),
        "latent_std": model.std.reshape(-1).cpu(),
        "loss_schedule": dataclasses.asdict(training.schedule),
        "perceptual_backbone": backbone["name"],
        "epochs": training.epochs,
    }
    if nuisance is not None:  # lr-livae: the decoder's input is [z_s, z_u]; E_u gives z_u of an image
        checkpoint |= {
            "u_dim": nuisance.u_dim,
            "kl_weight": kl_weight,
            "nuisance_encoder_config": dataclasses.asdict(encoder_config),
            "nuisance_encoder": {k: v.cpu() for k, v in nuisance.state_dict().items()},
        }
    return checkpoint, rows


def perceptual_backbone(ctx: StageContext) -> tuple[dict[str, Any], str]:
    """ImageNet VGG16 if its weights are on disk, else the dataset's neutral classifier.

    Returns the backbone (name and tensors, shipped to the tasks) and where it came from.
    """
    vgg_path = find_vgg_weights(ctx.spec.vgg_weights)
    if vgg_path is not None:
        return {"name": VGG_BACKBONE, "state": load_vgg_state(vgg_path)}, str(vgg_path)
    state, path, _ = ensure_neutral(ctx)
    return {"name": NEUTRAL_BACKBONE, "state": state}, str(path)


def encoder_state(path: Location) -> dict[str, Any]:
    """The parts of a classifier checkpoint the decoder needs (not the optimiser state)."""
    state = load_checkpoint(path, "rerun the search stage")
    return {k: state[k] for k in ("format", "encoder_config", "model")}


def reconstruction_sample(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of `count` images taking the classes in turn: the first of each class, then the second, ..."""
    members = [(labels == c).nonzero().squeeze(1) for c in labels.unique(sorted=True)]
    picked = [m[i] for i in range(max((len(m) for m in members), default=0)) for m in members if i < len(m)]
    return torch.stack(picked[:count]) if picked else torch.zeros(0, dtype=torch.int64)


def write_reconstructions(data: ImageData, encoder_state: dict[str, Any], checkpoint: dict[str, Any], path: Location) -> None:
    """Test images (top row) above their reconstructions by the trained decoder (bottom row), a PNG;
    an image of each class, at least 8 and at most 20. On the CPU: a few images, after the training."""
    device = torch.device("cpu")
    index = reconstruction_sample(data.test_y, max(8, min(20, data.num_classes)))
    images = data.test_x[index]
    decoded = decode_all(load_decoder(checkpoint, device), encode_all(load_classifier(encoder_state, device), images, device), device)
    path.write_bytes(grid_png([list(images), list(decoded)], row_labels=["test", "decoded"]))


def decoder_kinds(generators: tuple[str, ...]) -> tuple[str, ...]:
    """The decoders a run trains per promoted encoder: ReGene's, and lr-livae's when that strategy is asked for."""
    return (REGENE, LR_LIVAE) if LR_LIVAE in generators else (REGENE,)


def decoder_stage(ctx: StageContext) -> dict[str, Any]:
    checkpoints = ctx.promoted_checkpoints()
    training = DecoderTraining(epochs=ctx.spec.resolved_budget.decoder_epochs, base_width=ctx.spec.decoder_width, seed=ctx.spec.seed)
    kinds = decoder_kinds(tuple(ctx.spec.generators))
    backbone, source = perceptual_backbone(ctx)
    ctx.console.print(
        f"decoder: {len(checkpoints)} x {' + '.join(kinds)} decoder(s), {training.epochs} epochs, perceptual backbone {backbone['name']} ({escape(source)})"
    )
    jobs = {trial_id: encoder_state(path) for trial_id, path in checkpoints.items()}
    tasks = [(trial_id, kind) for kind in kinds for trial_id in jobs]
    calls = [(ctx.data, trial_id, jobs[trial_id], training, backbone, kind) for trial_id, kind in tasks]
    results = dict(zip(tasks, run_tasks(train_decoder, calls, cpus=ctx.spec.cpus_per_trial, gpus=ctx.spec.gpus_per_trial, report=ctx.say), strict=True))

    all_rows, summary = [], {}
    for (trial_id, kind), (checkpoint, rows) in results.items():
        save_checkpoint(checkpoint, ctx.paths.decoder_checkpoint(trial_id, kind))
        all_rows += rows
        last = rows[-1]
        done = {"val_mae": last["val_mae"], "val_ssim": last["val_ssim"], "seconds": sum(r["seconds"] for r in rows)}
        if kind == REGENE:
            summary[trial_id] = done
        else:  # beside ReGene's figures, which `show` prints as before
            summary[trial_id][kind] = done
        ctx.console.print(f"{kind} decoder {trial_id}: val MAE {last['val_mae']:.4f}, val SSIM {last['val_ssim']:.3f}")
    ctx.paths.write_table(all_rows, DECODER_COLUMNS, ctx.paths.decoder)
    # Figures last: the decoders and their table are saved whatever a figure does.
    name = ctx.paths.dir.name
    figures = [(ctx.paths.decoder_curves_figure, lambda p: plots.plot_decoder_curves(all_rows, p, title=f"{name}: decoder training per promoted encoder"))]
    figures += [
        (ctx.paths.reconstructions_figure(t), functools.partial(write_reconstructions, ctx.data, jobs[t], results[(t, REGENE)][0])) for t in jobs
    ]
    plots.save_each(figures, ctx.say)
    return {"perceptual_backbone": backbone["name"], "perceptual_source": source, "epochs": training.epochs, "kinds": list(kinds), "decoders": summary}
