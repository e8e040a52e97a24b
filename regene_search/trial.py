"""One classifier trial: train on in-memory tensors and score the three objectives each epoch.

Ray-agnostic: `run_trial` takes a callback that receives each epoch's metrics and a function
building the checkpoint state; `search/tuner.py` turns that into `tune.report`.

Objectives, measured after every epoch:
- `accuracy`: top-1 accuracy on the validation split.
- `decoder_mae`: see `probe_decoder_mae` (identical probe budget and seed for every trial).
- `latent_sparsity`: see `latent_sparsity`.
- `joint_score`: `ScoreWeights.joint_score` of the three.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .augment import augment_batch
from .config import ProbeConfig, ScoreWeights, TrialConfig
from .data.dataset import ImageData
from .models import CLASSIFIER_FORMAT, Classifier, Decoder
from .runtime import autocast, concat, encode_all, infer, lr_schedule, on_device, pick_device, to_float

SPARSITY_ATOL = 1e-6


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its hyperparameters; the same for every trial of a run."""

    probe: ProbeConfig = ProbeConfig()
    weights: ScoreWeights = ScoreWeights()
    seed: int = 0
    hflip: bool = False


def latent_sparsity(latents: torch.Tensor, atol: float = SPARSITY_ATOL) -> float:
    """Fraction of latent activations whose magnitude is at most `atol` (1e-6), i.e. zero.

    Measured over every (sample, unit) entry of the latents of the probe's fixed validation
    subset. 1.0 means every activation is zero (a dead latent), 0.0 means none is. ReLU latents
    are sparse by construction; leaky/tanh/identity latents are almost never exactly zero.
    """
    if latents.numel() == 0:
        raise ValueError("latent_sparsity of an empty tensor")
    return float((latents.abs() <= atol).float().mean())


def accuracy_and_latents(model: Classifier, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the latents of every image, from one pass through the encoder."""
    model.eval()

    def forward(x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.Tensor]:
        z = model.encode(to_float(x, device))
        return int((model.head(z).argmax(1).cpu() == y).sum()), z.float()

    parts = infer(forward, images, labels, device=device)
    return sum(c for c, _ in parts) / max(1, len(images)), concat([z for _, z in parts], torch.zeros(0))


def probe_indices(n_train: int, n_val: int, probe: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training and validation subsets of the probe, drawn from `probe.seed` alone."""
    gen = torch.Generator().manual_seed(probe.seed)
    train_idx = torch.randperm(n_train, generator=gen)[: probe.train_images]
    val_idx = torch.randperm(n_val, generator=gen)[: probe.val_images]
    return train_idx, val_idx


def probe_decoder_mae(
    train_latents: torch.Tensor,
    train_images: torch.Tensor,
    val_latents: torch.Tensor,
    val_images: torch.Tensor,
    probe: ProbeConfig,
    device: torch.device,
) -> float:
    """Mean absolute error (pixels in [0, 1]) of a small decoder trained briefly on frozen latents.

    The decoder architecture, the number of Adam steps, the batch order and the initial weights
    are fixed by `probe`, so the value ranks how decodable the latent spaces of different trials
    are. Latents are standardised per unit over the probe's training subset first, so trials
    whose latent scales differ are compared on information content, not on scale.
    """
    _, channels, size, _ = train_images.shape
    mean = train_latents.mean(0, keepdim=True)
    std = train_latents.std(0, keepdim=True).clamp_min(1e-6)
    train_z = ((train_latents - mean) / std).to(device)
    val_z = ((val_latents - mean) / std).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(probe.seed)
        decoder = Decoder(probe.decoder(image_size=size, channels=channels, latent_dim=train_z.shape[1])).to(device)
    decoder = on_device(decoder, device)  # channels_last: 1.2-2x per step on CPU (benchmarks/probe_layout.py)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=probe.lr)
    gen = torch.Generator().manual_seed(probe.seed + 1)
    decoder.train()
    for _ in range(probe.steps):
        idx = torch.randint(0, len(train_z), (min(probe.batch_size, len(train_z)),), generator=gen)
        with autocast(device):
            loss = F.l1_loss(decoder(train_z[idx.to(device)]).float(), to_float(train_images[idx], device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    decoder.eval()
    errors = infer(lambda z, x: float((decoder(z).float() - to_float(x, device)).abs().sum()), val_z, val_images, device=device)
    return sum(errors) / val_images.numel()


def checkpoint_state(
    model: Classifier,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: TrialConfig,
    epoch: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """A plain dict of tensors and primitives, loadable with `torch.load(..., weights_only=True)`."""
    return {
        "format": CLASSIFIER_FORMAT,
        "encoder_config": dataclasses.asdict(model.config),
        "trial_config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "metrics": dict(metrics),
    }


def run_trial(
    data: ImageData,
    config: TrialConfig,
    setup: TrialSetup,
    *,
    on_epoch: Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None] | None = None,
    resume_from: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Train a classifier for `config.epochs` epochs; return the per-epoch metrics.

    After each epoch `on_epoch(metrics, make_checkpoint)` is called; `make_checkpoint()` returns
    the checkpoint dict (built only when asked). `resume_from` is such a dict: training resumes at
    the epoch after the one it holds. Raises `TrialDiverged` when the loss is not finite.
    """
    device = device or pick_device()
    torch.manual_seed(setup.seed)
    model = on_device(Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes)), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    schedule = lr_schedule(optimiser, config.epochs * steps_per_epoch)
    start_epoch = 0
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimiser.load_state_dict(resume_from["optimiser"])
        schedule.load_state_dict(resume_from["schedule"])
        start_epoch = int(resume_from["epoch"])

    train_x = data.train_x.to(device)
    train_y = data.train_y.to(device)
    probe_train, probe_val = probe_indices(len(data.train_x), len(data.val_x), setup.probe)
    gen = torch.Generator()
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch + 1, config.epochs + 1):
        # Each epoch's randomness (batch order, augmentation, dropout) comes from the epoch alone, so an
        # epoch re-run after a resume reports what it reported before the interruption.
        gen.manual_seed(setup.seed * 1_000_003 + epoch)
        torch.manual_seed(setup.seed * 1_000_003 + epoch)
        model.train()
        epoch_start = time.perf_counter()
        loss_sum, seen = torch.zeros((), device=device), 0
        for idx in torch.randperm(len(train_x), generator=gen).to(device).split(config.batch_size):
            images = augment_batch(to_float(train_x[idx], device), hflip=setup.hflip, generator=gen) if config.augment else to_float(train_x[idx], device)
            with autocast(device):
                loss = F.cross_entropy(model(images), train_y[idx], label_smoothing=config.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        train_loss = float(loss_sum) / max(1, seen)
        if not math.isfinite(train_loss):
            raise TrialDiverged(f"training loss became {train_loss} in epoch {epoch}")
        train_seconds = time.perf_counter() - epoch_start

        probe_start = time.perf_counter()
        acc, all_val_latents = accuracy_and_latents(model, data.val_x, data.val_y, device)
        val_latents = all_val_latents[probe_val.to(all_val_latents.device)]  # the probe's subset, not encoded twice
        mae = probe_decoder_mae(
            encode_all(model, data.train_x[probe_train], device), data.train_x[probe_train], val_latents, data.val_x[probe_val], setup.probe, device
        )
        sparsity = latent_sparsity(val_latents)
        metrics = {
            "epoch": epoch,
            "accuracy": acc,
            "decoder_mae": mae,
            "latent_sparsity": sparsity,
            "joint_score": setup.weights.joint_score(accuracy=acc, decoder_mae=mae, latent_sparsity=sparsity),
            "train_loss": train_loss,
            "train_seconds": train_seconds,
            "probe_seconds": time.perf_counter() - probe_start,
            "seconds": time.perf_counter() - started,
            "images_per_second": seen / train_seconds,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, lambda: checkpoint_state(model, optimiser, schedule, config, epoch, metrics))
    return history
