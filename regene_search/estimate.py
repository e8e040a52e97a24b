"""Before a run starts: each stage's wall time on this machine, from a few timed real training steps.

Nothing is taken from a table of speeds: the estimate times the models the run will train, on
this machine's device, at the thread count a trial gets, and counts the work each stage does.

- search: the configurations the run's own searcher suggests first (`suggested_configs`: its
  seeded start-up draws, so the run's first trials exactly), `MEASURED_CONFIGS` of them timed;
  the trials the sampler will pick from results get the median timed trial.
  For each, a classifier training step at its batch size, its inference per image and a
  probe-decoder step; a trial-epoch is its training batches, the
  validation pass, the probe's encodes and the probe's steps. Trials are placed on the
  concurrent slots in order (so a long last trial shows as a straggler), plus each worker's
  start-up (Ray itself starts before the stage's clock does). ASHA schedulers are counted by
  the epochs their rungs let a trial run on average (1 / reduction factor of trials pass each rung).
- decoder: the stage decoder's training steps x batches, with the perceptual loss in every
  epoch but the last (its schedule), per promoted encoder, plus the neutral classifier's one-time
  training when it is not cached.
- generate / evaluate: decoding and judging every generation, and the LSDM generator's updates.

Before the search the promoted encoder is unknown, so the later stages are timed with the median
of the suggested configurations (and the decoder, LSDM and decoding costs scale with its latent
size and depth), and again with the cheapest and the dearest of them to infer with: the range a
stage can take by which encoder is promoted (CIFAR-10 cpu-hour promoted the cheapest, and its
generate and evaluate took half what the median predicted). Once the search has promoted its
encoders (`promoted_configs`), the pipeline estimates the remaining stages again with those.

The worker start-up constant is measured on the reference machine (`benchmarks/README.md`,
trial_throughput); every other figure is timed here, before the run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from .config import Budget, RunSpec, TrialConfig, scheduled_epochs
from .errors import RunDirError
from .data.dataset import ImageData
from .models import CLASSIFIER_FORMAT, Classifier, Decoder, DecoderConfig
from .results import read_parquet
from .runtime import EVAL_BATCH, on_device, pick_device, to_float
from .search.space import load_space
from .stages.context import StageContext

MEASURED_CONFIGS = 4
WORKER_START_SECONDS = 18.0  # a fresh worker imports torch, Ray Tune, Optuna and the package, then fetches the data
WARN_HOURS = 1.25  # past the hour or so that the cpu-hour budget is built to take on 2 cores
PNG_SECONDS = 2e-4  # encoding one small generation as PNG for generations.parquet
FIGURE_SECONDS = 1.5  # drawing and saving one matplotlib figure


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


def suggested_configs(spec: RunSpec, count: int) -> list[TrialConfig]:
    """The first `count` configurations the run's own searcher suggests (its sampler, seed and space),
    clamped to the budget as the trainable clamps them. With no result told, the sampler stays in
    its seeded start-up draws: the run's first trials exactly, and for the trials a sampler later
    picks from results, further draws of the same kind."""
    from .search.tuner import make_searcher, quiet_tune_output
    from .stages.search import settings_for

    quiet_tune_output()  # as the search stage does: no "new study created" line
    searcher = make_searcher(dataclasses.replace(settings_for(spec, None), max_concurrent=count)).searcher  # past the concurrency limiter
    space = load_space(Path(spec.space_path))
    searcher.set_search_properties(None, None, space.to_tune())
    # Tune adds the space's fixed values to what the searcher suggests.
    return [spec.resolved_budget.clamp(TrialConfig.from_dict(dict(space.fixed) | searcher.suggest(f"estimate-{i}"))) for i in range(count)]


def placed_on_slots(durations: list[float], slots: int) -> float:
    """Wall time of `durations` run in order, each on the first free of `slots` (what Tune does)."""
    free = [0.0] * max(1, slots)
    for duration in durations:
        free[free.index(min(free))] += duration
    return max(free)


@dataclass(frozen=True)
class StageEstimate:
    """A stage's expected wall time; `low`-`high` when it depends on an encoder not yet chosen."""

    stage: str
    seconds: float
    detail: str
    low: float | None = None
    high: float | None = None

    def spanning(self, others: list[StageEstimate]) -> StageEstimate:
        every = [self.seconds, *(o.seconds for o in others)]
        return dataclasses.replace(self, low=min(every), high=max(every))


def search_estimate(spec: RunSpec, configs: list[TrialConfig], costs: list[TrialCost], *, train_images: int, val_images: int, slots: int) -> StageEstimate:
    """Trials on `slots` in order. The sampler's random draws are the run's own (`suggested_configs`),
    timed; the trials it picks from results cannot be known before, so the median timed trial
    stands in for each (one more random draw is as likely to be the widest configuration)."""
    from .search.tuner import random_draws

    budget = spec.resolved_budget
    # The warm-up trials run to the end; later ones are expected to stop at the rungs.
    epochs = [c.config.epochs if i < spec.warmup_trials else scheduled_epochs(c.config.epochs, spec.scheduler, spec.grace_period, spec.reduction_factor)
              for i, c in enumerate(costs)]
    timed = [e * c.epoch_seconds(budget, train_images, val_images) for e, c in zip(epochs, costs)]
    # Suggested while fewer than the start-up trials have finished: drawn too.
    drawn = min(len(configs), random_draws(spec.sampler, trials=len(configs), startup_trials=spec.startup_trials) + slots - 1, len(timed))
    typical = statistics.median(timed)
    durations = timed[:drawn] + [typical] * (len(configs) - drawn)
    wall = WORKER_START_SECONDS + placed_on_slots(durations, slots)  # Ray itself is up before the first stage starts its clock
    per_epoch = statistics.median(c.epoch_seconds(budget, train_images, val_images) for c in costs)
    return StageEstimate("search", wall, f"{len(configs)} trials, {slots} at once, ~{per_epoch:.0f} s per trial-epoch")


# Images in a dataset's whole train + validation split: what a whole-split judge trains on.
WHOLE_SPLIT_IMAGES = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000, "celeba": 182637, "shapes": 6000}


def random_images(count: int, like: ImageData) -> torch.Tensor:
    return torch.randint(0, 256, (count, like.channels, like.image_size, like.image_size), dtype=torch.uint8)


def stand_in(data: ImageData, train: int, evaluated: int) -> ImageData:
    """Random images shaped and labelled like `data`: `train` training images, `evaluated` in each other split."""
    labels = lambda n: torch.arange(n) % data.num_classes  # noqa: E731 - every class present
    return ImageData(data.name, data.classes, random_images(train, data), labels(train), random_images(evaluated, data), labels(evaluated), random_images(evaluated, data), labels(evaluated))


def encoder_stand_in(config: TrialConfig, data: ImageData) -> dict[str, Any]:
    """An untrained classifier checkpoint of `config`: a decoder's cost depends on its encoder's shape only."""
    model = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
    return {"format": CLASSIFIER_FORMAT, "encoder_config": dataclasses.asdict(model.config), "model": model.state_dict()}


def per_image(forward: Callable[[torch.Tensor], object], inputs: torch.Tensor) -> float:
    """Seconds per item of `forward` on one evaluation batch of `inputs`."""
    with torch.no_grad():
        return seconds_per_call(lambda: forward(inputs)) / len(inputs)


@dataclass(frozen=True)
class JudgeCost:
    """The neutral judge: its one-time training (0 when cached), its inference per image and its checkpoint."""

    training: float
    infer_image: float
    state: dict[str, Any]


def judge_cost(ctx: StageContext, device: torch.device) -> JudgeCost:
    """Time two short epochs of the run's judge recipe on random images; its checkpoint stands in for the real one."""
    from .stages.neutral import cache_path, load_neutral, neutral_setup, train_neutral

    config, recipe = neutral_setup(ctx)
    batches, ended = 3, []
    tiny = stand_in(ctx.data, batches * recipe.batch_size, 16)
    state = train_neutral(tiny, config, dataclasses.replace(recipe, epochs=2), device=device, on_epoch=lambda epoch, _: ended.append(time.perf_counter()))
    batch = (ended[1] - ended[0]) / batches  # the second epoch: kernels warm
    cached = cache_path(ctx, recipe).exists()
    images = WHOLE_SPLIT_IMAGES.get(ctx.spec.dataset.family, len(ctx.data.train_x) + len(ctx.data.val_x)) if recipe.whole_split else len(ctx.data.train_x) + len(ctx.data.val_x)
    model = load_neutral(state, device)
    infer = per_image(lambda x: model(to_float(x, device)), random_images(EVAL_BATCH, ctx.data))
    return JudgeCost(0.0 if cached else recipe.epochs * math.ceil(images / recipe.batch_size) * batch, infer, state)


def perceptual_stand_in(ctx: StageContext, judge: JudgeCost) -> dict[str, Any]:
    """The decoder's perceptual backbone as the stage will pick it: VGG16 weights on disk, else the judge."""
    from .stages.losses import NEUTRAL_BACKBONE, VGG_BACKBONE, find_vgg_weights, load_vgg_state

    vgg = find_vgg_weights(ctx.spec.vgg_weights)
    return {"name": VGG_BACKBONE, "state": load_vgg_state(vgg)} if vgg else {"name": NEUTRAL_BACKBONE, "state": judge.state}


def promoted_count(spec: RunSpec) -> int:
    """Encoders the search promotes: one at the knee, K with --promote-top, about 3 for a whole front."""
    return max(3, spec.promote_top) if spec.promote == "front" else spec.promote_top


def promoted_configs(ctx: StageContext) -> list[TrialConfig]:
    """The configurations of the encoders the search promoted (empty before the search has promoted any)."""
    try:
        ids = set(ctx.promoted_checkpoints())
    except RunDirError:
        return []
    rows = read_parquet(ctx.paths.trials).to_pylist()
    return [TrialConfig.from_dict({k.removeprefix("param_"): v for k, v in row.items() if k.startswith("param_")}) for row in rows if row["trial_id"] in ids]


def decoder_estimate(ctx: StageContext, encoders: list[TrialCost], judge: JudgeCost, backbone: dict[str, Any], slots: int, device: torch.device) -> StageEstimate:
    from .stages.decoder import DecoderTraining, decoder_images, decoder_kinds, train_decoder

    spec, data = ctx.spec, ctx.data
    training = DecoderTraining(epochs=spec.resolved_budget.decoder_epochs, base_width=spec.decoder_width)
    images = len(decoder_images(data))
    batches = 3
    tiny = stand_in(data, batches * training.batch_size, 16)
    @functools.cache  # before the search every promoted encoder is the same stand-in: timed once
    def batch_seconds(kind: str, config: TrialConfig) -> tuple[float, float]:
        # Three short epochs: the second (kernels warm) pays the perceptual term, as every epoch
        # but the last does (LossSchedule); the third, like the last, skips its backbone.
        _, rows = train_decoder(tiny, "estimate", encoder_stand_in(config, data), dataclasses.replace(training, epochs=3), backbone, kind, device=device)
        return rows[1]["seconds"] / batches, rows[2]["seconds"] / batches

    tasks = []
    for kind in decoder_kinds(tuple(spec.generators)):
        for cost in encoders:
            perceptual, pixels_only = batch_seconds(kind, cost.config)
            per_epoch = math.ceil(images / training.batch_size)
            encode = (images + len(data.val_x)) * cost.infer_image
            last = pixels_only if training.epochs > 1 else perceptual
            tasks.append(encode + per_epoch * ((training.epochs - 1) * perceptual + last))
    judge_first = judge.training if backbone["state"] is judge.state else 0.0  # the decoder stage trains the judge first
    wall = judge_first + placed_on_slots(tasks, slots)
    detail = f"{len(tasks)} decoder(s) x {training.epochs} epochs on {images} images" + (f", the judge's one-time training first ({duration_text(judge_first)})" if judge_first else "")
    return StageEstimate("decoder", wall, detail)


def generated_per_strategy(spec: RunSpec, num_classes: int) -> int:
    return num_classes * spec.generate_per_class * len(spec.generate_n)


def decode_seconds(ctx: StageContext, cost: TrialCost, device: torch.device) -> float:
    """Seconds to decode one latent with the stage decoder."""
    from .stages.decoder import DecoderTraining

    data, latent_dim = ctx.data, cost.config.latent_dim
    width = DecoderTraining(epochs=1, base_width=ctx.spec.decoder_width).width_for(data.image_size)
    decoder = on_device(Decoder(DecoderConfig(image_size=data.image_size, channels=data.channels, latent_dim=latent_dim, base_width=width)), device).eval()
    return per_image(decoder, torch.randn(EVAL_BATCH, latent_dim, device=device))


def lsdm_seconds(ctx: StageContext, cost: TrialCost, device: torch.device) -> float:
    """The lsdm strategy's generator training: its updates timed on random latents, x the budget's steps."""
    from .generators.lsdm import LSDMSettings, train_lsdm

    steps = 10
    latents = torch.rand(512, cost.config.latent_dim)
    _, rows = train_lsdm(latents, torch.arange(512) % ctx.data.num_classes, ctx.data.num_classes, cost.config.latent_activation,
                         LSDMSettings(steps=2 * steps, log_every=steps), device=device)
    return rows[-1]["seconds"] / steps * ctx.spec.resolved_budget.lsdm_steps  # a loss row's `seconds` covers its own `log_every` updates: the second, warm one


def generate_estimate(ctx: StageContext, encoders: list[TrialCost], decodes: list[float], slots: int, device: torch.device) -> StageEstimate:
    from .stages.generate import GenerateSettings

    spec, data = ctx.spec, ctx.data
    per_strategy = generated_per_strategy(spec, data.num_classes)
    encoded = len(data.train_x) + len(data.val_x)  # the class Gaussians' latents and the thresholds
    # The image step's thresholds: the holdout images reconstructed by each decoder and classified (none with the paper's rule).
    decoders = 1 + ("lr-livae" in spec.generators) if GenerateSettings.from_spec(spec).reconstructs_holdout else 0
    lsdm, rest = [], 0.0
    lsdm_timed = functools.cache(lambda cost: lsdm_seconds(ctx, cost, device))
    for cost, decode in zip(encoders, decodes):
        reconstructed = decoders * len(data.val_x) * (decode + cost.infer_image)
        rest += encoded * cost.infer_image + reconstructed + len(spec.generators) * per_strategy * (decode + cost.infer_image + PNG_SECONDS)
        rest += FIGURE_SECONDS * (2 + len(spec.generators))
        if "lsdm" in spec.generators:
            lsdm.append(lsdm_timed(cost))
    wall = (placed_on_slots(lsdm, slots) if lsdm else 0.0) + rest
    return StageEstimate("generate", wall, f"{len(spec.generators)} strategies x {per_strategy} images per encoder" + (", the LSDM generator trained first" if lsdm else ""))


def evaluate_estimate(ctx: StageContext, encoders: list[TrialCost], decodes: list[float], judge: JudgeCost, decoder_trains_judge: bool) -> StageEstimate:
    spec, data = ctx.spec, ctx.data
    generated = len(spec.generators) * generated_per_strategy(spec, data.num_classes)
    per_encoder = [len(data.test_x) * (cost.infer_image + decode + judge.infer_image) + generated * judge.infer_image + FIGURE_SECONDS * (3 + len(spec.generators))
                   for cost, decode in zip(encoders, decodes)]
    training = 0.0 if decoder_trains_judge else judge.training
    wall = training + len(data.test_x) * judge.infer_image + sum(per_encoder)
    return StageEstimate("evaluate", wall, f"the judge on {len(data.test_x)} test images and {generated} generations per encoder" + (f", after its one-time training ({duration_text(training)})" if training else ""))


def estimate_run(ctx: StageContext, stages: list[str], *, slots: int, device: torch.device | None = None) -> list[StageEstimate]:
    """The estimated wall time of each of `stages`, timed at a trial's thread count."""
    device = device or pick_device()
    spec, data = ctx.spec, ctx.data
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    measure = lambda c: measure_trial(c, spec.resolved_budget, image_size=data.image_size, channels=data.channels, num_classes=data.num_classes, device=device)  # noqa: E731
    try:
        found = []
        later = [s for s in stages if s != "search"]
        judge = judge_cost(ctx, device) if {"decoder", "evaluate"} & set(stages) else None
        decode = functools.cache(lambda cost: decode_seconds(ctx, cost, device))
        later_with = lambda encoders: later_estimates(ctx, later, encoders, judge, decode, slots, device)  # noqa: E731
        promoted = [] if "search" in stages else promoted_configs(ctx)
        if promoted:  # the later stages of a searched run: its own encoders
            return later_with([measure(c) for c in promoted])
        configs = suggested_configs(spec, spec.resolved_trials)
        costs = [measure(c) for c in configs[:MEASURED_CONFIGS]]
        if "search" in stages:
            found.append(search_estimate(spec, configs, costs, train_images=len(data.train_x), val_images=len(data.val_x), slots=slots))
        if not later:
            return found
        typical = sorted(costs, key=lambda c: c.train_batch / c.config.batch_size)[len(costs) // 2]  # the median encoder stands for the promoted one
        by_inference = sorted(costs, key=lambda c: c.infer_image)
        bounds = {id(c): c for c in (by_inference[0], by_inference[-1]) if c is not typical}.values()
        count = promoted_count(spec)
        central = later_with([typical] * count)
        extremes = [later_with([c] * count) for c in bounds]
        return found + [e.spanning([other[i] for other in extremes]) for i, e in enumerate(central)]
    finally:
        torch.set_num_threads(threads)


def later_estimates(
    ctx: StageContext, stages: list[str], encoders: list[TrialCost], judge: JudgeCost | None, decode: Callable[[TrialCost], float], slots: int, device: torch.device
) -> list[StageEstimate]:
    """The decoder, generate and evaluate stages among `stages`, with `encoders` promoted; `decode`
    gives an encoder's seconds to decode one latent."""
    found = []
    decoder_trains_judge = False
    if "decoder" in stages:
        backbone = perceptual_stand_in(ctx, judge)
        found.append(decoder_estimate(ctx, encoders, judge, backbone, slots, device))
        decoder_trains_judge = backbone["state"] is judge.state
    decodes = [decode(cost) for cost in encoders] if {"generate", "evaluate"} & set(stages) else []
    if "generate" in stages:
        found.append(generate_estimate(ctx, encoders, decodes, slots, device))
    if "evaluate" in stages:
        found.append(evaluate_estimate(ctx, encoders, decodes, judge, decoder_trains_judge))
    return found


def duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def print_estimate(estimates: list[StageEstimate], console: Console, *, budget: str, measured_in: float, title: str = "estimate") -> None:
    """One line per stage; a warning when the stages need more than `WARN_HOURS` without a GPU."""
    total = sum(s.seconds for s in estimates)
    where = "this machine's GPU" if torch.cuda.is_available() else "this machine (no GPU)"
    console.print(f"{title}: about {duration_text(total)} on {where}, from {measured_in:.0f} s of timed training steps")
    for stage in estimates:
        spread = f" ({duration_text(stage.low)} to {duration_text(stage.high)} by the encoder promoted)" if stage.low is not None and stage.high - stage.low >= 0.2 * stage.seconds else ""
        console.print(f"  {stage.stage:<9} {duration_text(stage.seconds):>7}  {stage.detail}{spread}", markup=False, highlight=False)
    if total >= WARN_HOURS * 3600 and not torch.cuda.is_available():
        console.print(
            f"[bold yellow]No GPU found: the '{budget}' budget needs about {duration_text(total)} on this machine. "
            "Use --budget smoke, fewer --trials, or a GPU cluster (--address).[/bold yellow]"
        )
