"""Before a run starts: time a few real training steps and say when the budget would take hours."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from .config import RunSpec, TrialConfig
from .data import dataset_info
from .models import Classifier
from .search.space import load_space

FULL_TRAIN_IMAGES = {"mnist": 54000, "fashion-mnist": 54000, "cifar10": 45000, "celeba": 180000, "shapes": 5400}
WARN_HOURS = 1.0


def measured_images_per_second(config: TrialConfig, *, image_size: int, channels: int, steps: int = 3) -> float:
    """Training throughput of `config` on this machine's CPU, from a few steps on random data."""
    model = Classifier(config.encoder(image_size=image_size, channels=channels, num_classes=10))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(config.batch_size, channels, image_size, image_size)
    labels = torch.randint(0, 10, (config.batch_size,))
    for step in range(steps + 1):
        if step == 1:  # the first step pays one-off kernel setup
            started = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return steps * config.batch_size / (time.perf_counter() - started)


def estimated_hours(spec: RunSpec, images_per_second: float, concurrent: int) -> float:
    budget = spec.resolved_budget
    images = budget.train_images or FULL_TRAIN_IMAGES.get(spec.dataset.family, 50000)
    trial_epochs = spec.resolved_trials * budget.max_epochs
    return trial_epochs * images / images_per_second / max(1, concurrent) / 3600


def warn_if_slow(spec: RunSpec, console: Console) -> None:
    """Without a GPU, estimate the search's wall time from a measurement and warn above an hour."""
    if torch.cuda.is_available() or spec.gpus_per_trial > 0 or spec.budget == "smoke" or "search" not in spec.stages:
        return
    info = dataset_info(spec.dataset)
    defaults = load_space(Path(spec.space_path)).default_config()
    config = TrialConfig.from_dict({k: v for k, v in defaults.items()})
    threads = torch.get_num_threads()
    concurrent = max(1, int(threads // max(spec.cpus_per_trial, 1)))
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    try:
        ips = measured_images_per_second(config, image_size=info.image_size or 32, channels=info.channels or 3)
    finally:
        torch.set_num_threads(threads)
    hours = estimated_hours(spec, ips, concurrent)
    if hours >= WARN_HOURS:
        console.print(
            f"[bold yellow]No GPU found: the '{spec.budget}' budget needs about {hours:.1f} hours of search on this machine "
            f"(measured {ips:.0f} training images/s per trial, {concurrent} at once). Use --budget smoke, fewer --trials, "
            "or a GPU cluster (--address).[/bold yellow]"
        )
