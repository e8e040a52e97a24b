"""Typed, frozen configuration: model architectures, trial hyperparameters, probe, score weights, budgets, runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .data.dataset import check_labelled_fraction
from .data.names import DatasetRef

LATENT_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid", "identity")
SUPPORTED_IMAGE_SIZES = (28, 32, 64)


def _check_image_size(size: int) -> None:
    if size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {size}")


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the classifier. `blocks` conv blocks, each ending in a 2x2 max-pool."""

    image_size: int
    channels: int
    num_classes: int
    blocks: int = 3
    convs_per_block: int = 1
    base_width: int = 32
    latent_dim: int = 256
    latent_activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_image_size(self.image_size)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.latent_activation not in LATENT_ACTIVATIONS:
            raise ValueError(f"latent_activation must be one of {LATENT_ACTIVATIONS}, got {self.latent_activation!r}")
        if self.image_size >> self.blocks < 1:
            raise ValueError(f"{self.blocks} blocks pool a {self.image_size}px image below 1px")
        if min(self.blocks, self.convs_per_block, self.base_width, self.latent_dim) < 1:
            raise ValueError("blocks, convs_per_block, base_width and latent_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of the decoder: dense -> reshape -> upsampling blocks -> sigmoid."""

    image_size: int
    channels: int
    latent_dim: int
    base_width: int = 32
    max_blocks: int = 4

    def __post_init__(self) -> None:
        _check_image_size(self.image_size)

    @property
    def up_blocks(self) -> int:
        """Upsampling blocks: as many x2 steps as divide the size, starting at >= 4 px."""
        n = 0
        while n < self.max_blocks and self.image_size % (2 ** (n + 1)) == 0 and self.image_size >> (n + 1) >= 4:
            n += 1
        return n

    @property
    def start_size(self) -> int:
        return self.image_size >> self.up_blocks


@dataclass(frozen=True)
class TrialConfig:
    """Hyperparameters of one classifier trial. Every field may be searched (see search_spaces/)."""

    blocks: int = 3
    convs_per_block: int = 1
    base_width: int = 32
    latent_dim: int = 256
    latent_activation: str = "relu"
    dropout: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    batch_size: int = 128
    epochs: int = 2
    augment: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Build from a (possibly partial) dict, casting each value to the field's type."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown trial hyperparameter(s): {', '.join(unknown)}")
        cast = {name: _CASTS[known[name].type](value) for name, value in values.items()}
        return cls(**cast)

    def encoder(self, *, image_size: int, channels: int, num_classes: int) -> EncoderConfig:
        return EncoderConfig(
            image_size=image_size,
            channels=channels,
            num_classes=num_classes,
            blocks=self.blocks,
            convs_per_block=self.convs_per_block,
            base_width=self.base_width,
            latent_dim=self.latent_dim,
            latent_activation=self.latent_activation,
            dropout=self.dropout,
        )


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


_CASTS = {"int": int, "float": float, "str": str, "bool": _to_bool}

TRIAL_FIELD_TYPES: dict[str, str] = {f.name: f.type for f in dataclasses.fields(TrialConfig)}


@dataclass(frozen=True)
class ProbeConfig:
    """The decoder probe behind `decoder_mae`. Identical for every trial of a run, so MAE compares.

    A decoder of fixed architecture (`DecoderConfig` with `base_width`) is trained for `steps`
    Adam steps on the frozen latents of a fixed `train_images` subset of the train split, then
    its mean absolute error (pixels in [0, 1]) is measured on a fixed `val_images` subset of the
    validation split. Subsets, initial weights and batch order all come from `seed`.
    """

    train_images: int = 2048
    val_images: int = 512
    steps: int = 150
    batch_size: int = 64
    lr: float = 3e-3
    base_width: int = 8
    seed: int = 1234

    def decoder(self, *, image_size: int, channels: int, latent_dim: int) -> DecoderConfig:
        return DecoderConfig(image_size=image_size, channels=channels, latent_dim=latent_dim, base_width=self.base_width)


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of `joint_score = accuracy * w_accuracy - decoder_mae * w_mae - latent_sparsity * w_sparsity`.

    All three objectives lie in [0, 1]; higher joint_score is better.
    """

    accuracy: float = 1.0
    mae: float = 2.0
    sparsity: float = 0.25

    def joint_score(self, *, accuracy: float, decoder_mae: float, latent_sparsity: float) -> float:
        return self.accuracy * accuracy - self.mae * decoder_mae - self.sparsity * latent_sparsity


@dataclass(frozen=True)
class Budget:
    """How much a run may spend: data subset sizes, epochs, trials and the probe budget."""

    name: str
    train_images: int | None
    val_images: int | None
    max_epochs: int
    trials: int
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    decoder_epochs: int = 5
    neutral_epochs: int = 3
    lsdm_steps: int = 1000  # generator updates of the lsdm strategy's latent generator
    # A floor under the filter's image-step thresholds (stricter than the paper; stages/generate.py).
    min_image_confidence: float | None = None
    # The search the budget runs unless `run` says otherwise (benchmarks/README.md, search efficiency).
    sampler: str = "tpe"
    scheduler: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 2.0
    warmup_trials: int = 0

    def clamp(self, trial: TrialConfig) -> TrialConfig:
        """Cap a trial's epochs at the budget's maximum."""
        return dataclasses.replace(trial, epochs=min(trial.epochs, self.max_epochs))


# The search that won on the CIFAR-10 learning-curve table (benchmarks/README.md, search efficiency;
# issue 12): ASHA on joint_score, 1 in 10 trials past its one rung, no stop before 2 trials have run
# to the end. Its rung sat at 2 of 12 epochs; each budget sets its own at about 1/6-1/4. rf 10 beat
# rf 4 at 100 seeds (0.58-0.61 of FIFO's trial-epochs to its final HV, not 0.63-0.68) and matches
# the best exact cutoff an oracle could set at that rung (benchmarks/efficiency_bound.py).
SEARCH_WINNER: dict[str, Any] = {"sampler": "random", "scheduler": "asha", "reduction_factor": 10.0, "warmup_trials": 2}

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        train_images=5000,
        val_images=1000,
        max_epochs=2,
        trials=4,
        probe=ProbeConfig(train_images=1024, val_images=256, steps=60),
        decoder_epochs=4,
        neutral_epochs=2,
        lsdm_steps=1000,
    ),
    # About an hour of every stage for CIFAR-10 on 2 CPU cores (issue 18 item 2), the cached judge aside.
    # Its CPU-trained classifier's per-class mean confidences are low for the hard classes, so the
    # filter also asks 0.7 of every generated image: the judge's accuracy on accepted convex images
    # 0.668 -> 0.913 (benchmarks/README.md, the cpu-hour budget).
    "cpu-hour": Budget(
        name="cpu-hour",
        train_images=10000,
        val_images=2000,
        max_epochs=6,
        trials=6,
        probe=ProbeConfig(train_images=1024, val_images=256, steps=60),
        decoder_epochs=12,
        neutral_epochs=12,
        lsdm_steps=1500,
        min_image_confidence=0.7,
    ),
    "default": Budget(
        name="default",
        train_images=20000,
        val_images=5000,
        max_epochs=8,
        trials=24,
        probe=ProbeConfig(),
        decoder_epochs=20,
        neutral_epochs=10,
        **SEARCH_WINNER,
        grace_period=2,
    ),
    "paper": Budget(
        name="paper",
        train_images=None,
        val_images=None,
        max_epochs=60,
        trials=128,
        probe=ProbeConfig(train_images=8192, val_images=2048, steps=600, batch_size=128, base_width=16),
        decoder_epochs=100,
        neutral_epochs=60,
        lsdm_steps=3000,
        **SEARCH_WINNER,
        grace_period=10,
    ),
}


STAGES = ("search", "decoder", "generate", "evaluate")
SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("fifo", "asha", "pareto-asha", "pareto-asha-epsnet")
# Generation strategies of the generate stage (stages/generate.py; issue 14).
GENERATORS = ("convex", "gaussian", "lsdm", "lr-livae")
# What the filter's image step holds a generation of class c to: the classifier's mean confidence on
# the decoder's reconstructions of the holdout images of c (default), or on those images (the paper's).
IMAGE_THRESHOLDS = ("reconstructions", "holdout")


def asha_rungs(epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs where an ASHA scheduler stops trials, short of the last: grace, grace x rf, ..."""
    rungs, rung = [], grace_period
    while rung < epochs:
        rungs.append(rung)
        rung = int(round(rung * reduction_factor))
    return rungs


def scheduled_epochs(epochs: int, scheduler: str, grace_period: int, reduction_factor: float) -> float:
    """Expected epochs a trial asking for `epochs` runs: all under FIFO; under ASHA, a 1 / reduction
    factor share of trials passes each rung."""
    if scheduler == "fifo":
        return float(epochs)
    rungs = asha_rungs(epochs, grace_period, reduction_factor)
    return sum(reduction_factor ** -sum(r < epoch for r in rungs) for epoch in range(1, epochs + 1))


@dataclass(frozen=True)
class RunSpec:
    """Everything a run was asked to do, resolved from the CLI; stored in run.json for resume."""

    dataset: DatasetRef  # a name as typed is resolved here, once
    data_dir: str | None
    budget: str
    name: str
    results_root: str
    space_path: str
    seed: int = 0
    trials: int | None = None
    sampler: str = "tpe"
    scheduler: str = "fifo"
    grace_period: int = 1  # epochs before an ASHA scheduler's first rung
    reduction_factor: float = 2.0  # ASHA's eta: about 1 in this many trials go on at each rung
    startup_trials: int | None = None  # TPE's random trials before it models (None: trials // 3, within 2..10)
    warmup_trials: int = 0  # ASHA schedulers: trials run to the end before any is stopped at a rung
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    promote: str = "knee"
    promote_weights: tuple[float, float, float] | None = None
    promote_top: int = 1
    val_fraction: float = 0.1
    labelled_fraction: float = 1.0  # the share of the train split that keeps its labels (issue 14: semi-supervised runs)
    stages: tuple[str, ...] = STAGES
    vgg_weights: str | None = None
    inception_weights: str | None = None
    inception_images: int = 2000
    neutral_depth: int | None = None
    decoder_width: int | None = None
    generate_n: tuple[int, ...] = (2, 3, 5)
    generate_per_class: int = 64
    generate_weights: str = "uniform"
    dirichlet_alpha: float = 1.0
    generate_threshold: float | None = None
    image_threshold: str = IMAGE_THRESHOLDS[0]  # what the filter's image step holds a generation to (stages/generate.py)
    min_image_confidence: float | None = None  # a floor under the image step's thresholds (not in the paper)
    generators: tuple[str, ...] = GENERATORS
    novelty_samples: int = 256
    mlflow: str | None = None  # MLflow tracking URI (trackers.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", DatasetRef.of(self.dataset))
        check_labelled_fraction(self.labelled_fraction)

    @property
    def resolved_budget(self) -> Budget:
        return BUDGETS[self.budget]

    @property
    def resolved_trials(self) -> int:
        """`--trials`, else the budget's; an early-stopping scheduler gets as many trials as the budget's
        trials would spend run whole (expected), so that it buys breadth, not a shorter search."""
        if self.trials is not None:
            return self.trials
        budget = self.resolved_budget
        each = scheduled_epochs(budget.max_epochs, self.scheduler, self.grace_period, self.reduction_factor)
        whole = min(self.warmup_trials, budget.trials) if self.scheduler != "fifo" else budget.trials
        return whole + round((budget.trials - whole) * budget.max_epochs / each)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dataset": self.dataset.name}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        # A run recorded before the strategies existed generated by convex combinations only.
        values.setdefault("generators", ("convex",))
        # ... and held generated images to the holdout images' confidence, as the paper does.
        values.setdefault("image_threshold", "holdout")
        for key in ("promote_weights", "stages", "generate_n", "generators"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)
