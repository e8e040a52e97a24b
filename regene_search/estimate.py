"""Before a run starts: each stage's wall time on this machine, from a few timed real training steps.

Nothing is taken from a table of speeds: the estimate times the models the run will train, on
this machine's device, at the thread count a trial gets, and counts the work each stage does.

- search: `MEASURED_CONFIGS` configurations drawn from the run's own search space (the spread a
  sampler explores, not one default). For each, a classifier training step at its batch size,
  its inference per image and a probe-decoder step; a trial-epoch is its training batches, the
  validation pass, the probe's encodes and the probe's steps. Trials are placed on the
  concurrent slots in order (so a long last trial shows as a straggler), plus Ray's start and
  each worker's start-up. ASHA schedulers are counted by the epochs their rungs let a trial run
  on average (1 / reduction factor of trials pass each rung).
- decoder: the stage decoder's training step (with its perceptual loss) x epochs x batches, per
  promoted encoder, plus the neutral classifier's one-time training when it is not cached.
- generate / evaluate: decoding and judging every generation, and the LSDM generator's updates.

The start-up constants are measured on the reference machine (`benchmarks/README.md`,
trial_throughput); every other figure is timed here, before the run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from .config import Budget, RunSpec, TrialConfig
from .data import dataset_info
from .models import Classifier, Decoder
from .runtime import EVAL_BATCH, on_device, pick_device, to_float
from .search.space import load_space

MEASURED_CONFIGS = 4
RAY_START_SECONDS = 12.0  # ray.init with the dashboard, 2 cores (benchmarks/README.md, trial_throughput)
WORKER_START_SECONDS = 18.0  # a fresh worker imports torch, Ray Tune, Optuna and the package, then fetches the data
FULL_TRAIN_IMAGES = {"mnist": 54000, "fashion-mnist": 54000, "cifar10": 45000, "celeba": 180000, "shapes": 5400}
FULL_VAL_IMAGES = {"mnist": 6000, "fashion-mnist": 6000, "cifar10": 5000, "celeba": 20000, "shapes": 600}
WARN_HOURS = 1.0


def seconds_per_call(step: Callable[[], object], *, repeats: int = 1) -> float:
    """Median wall time of `step` after one untimed call (which pays one-off kernel set-up)."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass(frozen=True)
class TrialCost:
    """Measured seconds of one configuration's parts."""

    config: TrialConfig
    train_batch: float
    infer_image: float
    probe_step: float

    def epoch_seconds(self, budget: Budget, train_images: int, val_images: int) -> float:
        probe = budget.probe
        batches = math.ceil(train_images / self.config.batch_size)
        encoded = val_images + min(probe.train_images, train_images)
        return batches * self.train_batch + encoded * self.infer_image + probe.steps * self.probe_step


def measure_trial(config: TrialConfig, budget: Budget, *, image_size: int, channels: int, num_classes: int, device: torch.device) -> TrialCost:
    """Time `config`'s training step, its inference and the probe's decoder step on random data."""
    model = on_device(Classifier(config.encoder(image_size=image_size, channels=channels, num_classes=num_classes)), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (config.batch_size, channels, image_size, image_size), dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (config.batch_size,), device=device)

    def train_step() -> None:
        model.train()
        loss = F.cross_entropy(model(to_float(images, device)), labels, label_smoothing=config.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    eval_images = torch.randint(0, 256, (EVAL_BATCH, channels, image_size, image_size), dtype=torch.uint8)

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        model(to_float(eval_images, device))

    probe = budget.probe
    decoder = on_device(Decoder(probe.decoder(image_size=image_size, channels=channels, latent_dim=config.latent_dim)), device)
    probe_optimiser = torch.optim.Adam(decoder.parameters(), lr=probe.lr)
    latents = torch.randn(probe.batch_size, config.latent_dim, device=device)
    targets = to_float(images[: probe.batch_size].repeat(math.ceil(probe.batch_size / len(images)), 1, 1, 1)[: probe.batch_size], device)

    def probe_step() -> None:
        loss = F.l1_loss(decoder(latents), targets)
        probe_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        probe_optimiser.step()

    return TrialCost(config, seconds_per_call(train_step), seconds_per_call(infer) / EVAL_BATCH, seconds_per_call(probe_step, repeats=2))


def drawn_configs(spec: RunSpec, count: int) -> list[TrialConfig]:
    """`count` configurations drawn from the run's search space with the run's seed, clamped to the budget."""
    space = load_space(Path(spec.space_path))
    rng = np.random.default_rng([spec.seed, 31])
    fields = TrialConfig.__dataclass_fields__
    draws = []
    for _ in range(count):
        point = {name: domain.sample(rng) for name, domain in space.params.items()} | dict(space.fixed)
        draws.append(spec.resolved_budget.clamp(TrialConfig.from_dict({k: v for k, v in point.items() if k in fields})))
    return draws


def scheduled_epochs(epochs: int, scheduler: str, grace_period: int, reduction_factor: float) -> float:
    """Expected epochs a trial asking for `epochs` runs: all under FIFO; under ASHA, a 1 / reduction
    factor share of trials passes each rung (grace, grace x rf, ...)."""
    if scheduler == "fifo":
        return float(epochs)
    expected, survive, rung = 0.0, 1.0, grace_period
    for epoch in range(1, epochs + 1):
        expected += survive
        if epoch == rung and epoch < epochs:
            survive /= reduction_factor
            rung = int(round(rung * reduction_factor))
    return expected


def placed_on_slots(durations: list[float], slots: int) -> float:
    """Wall time of `durations` run in order, each on the first free of `slots` (what Tune does)."""
    free = [0.0] * max(1, slots)
    for duration in durations:
        free[free.index(min(free))] += duration
    return max(free)


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    seconds: float
    detail: str


def search_estimate(spec: RunSpec, *, image_size: int, channels: int, num_classes: int, train_images: int, val_images: int, slots: int, device: torch.device) -> StageEstimate:
    budget = spec.resolved_budget
    trials = spec.resolved_trials
    configs = drawn_configs(spec, trials)
    measured = [measure_trial(c, budget, image_size=image_size, channels=channels, num_classes=num_classes, device=device) for c in configs[:MEASURED_CONFIGS]]
    durations = []
    for i, config in enumerate(configs):  # configs beyond the measured ones take their costs in turn
        epochs = scheduled_epochs(config.epochs, spec.scheduler, spec.grace_period, spec.reduction_factor)
        durations.append(epochs * measured[i % len(measured)].epoch_seconds(budget, train_images, val_images))
    wall = RAY_START_SECONDS + WORKER_START_SECONDS + placed_on_slots(durations, slots)
    per_epoch = statistics.median(c.epoch_seconds(budget, train_images, val_images) for c in measured)
    return StageEstimate("search", wall, f"{trials} trials, {slots} at once, ~{per_epoch:.0f} s per trial-epoch")


def data_sizes(spec: RunSpec) -> tuple[int, int]:
    """(train, validation) images the run trains and validates on."""
    budget, family = spec.resolved_budget, spec.dataset.family
    train = budget.train_images or FULL_TRAIN_IMAGES.get(family, 50000)
    val = budget.val_images or FULL_VAL_IMAGES.get(family, 5000)
    return train, val


def estimate_run(spec: RunSpec, *, slots: int, device: torch.device | None = None) -> list[StageEstimate]:
    """Each requested stage's estimated wall time, timed at a trial's thread count."""
    device = device or pick_device()
    info = dataset_info(spec.dataset)
    image_size, channels, num_classes = info.image_size or 32, info.channels or 3, len(info.classes or ()) or 10
    train, val = data_sizes(spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    try:
        found = []
        if "search" in spec.stages:
            found.append(search_estimate(spec, image_size=image_size, channels=channels, num_classes=num_classes, train_images=train, val_images=val, slots=slots, device=device))
        return found
    finally:
        torch.set_num_threads(threads)


def duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def print_estimate(spec: RunSpec, console: Console, *, slots: int) -> None:
    """One line per stage; a warning when the whole run needs more than `WARN_HOURS` on a CPU."""
    started = time.perf_counter()
    stages = estimate_run(spec, slots=slots)
    total = sum(s.seconds for s in stages)
    where = "this machine's GPU" if torch.cuda.is_available() else "this machine (no GPU)"
    console.print(f"estimate on {where}, from {time.perf_counter() - started:.0f} s of timed steps: about {duration_text(total)} in all")
    for stage in stages:
        console.print(f"  {stage.stage:<9} {duration_text(stage.seconds):>7}  {stage.detail}")
    if total >= WARN_HOURS * 3600 and not torch.cuda.is_available() and spec.gpus_per_trial == 0:
        console.print(
            f"[bold yellow]No GPU found: the '{spec.budget}' budget needs about {duration_text(total)} on this machine. "
            "Use --budget smoke, fewer --trials, or a GPU cluster (--address).[/bold yellow]"
        )
