"""The neutral classifier: a CIFAR-style ResNet v1 trained from scratch, cached per dataset.

The paper judges generations with a classifier of an independent architecture (ResNet56v1),
never the ReGene classifier itself, which would be circular. Here the depth is configurable
(6k + 2 layers): by default ResNet-8 for the smoke budget, ResNet-20 for the default
budget and the paper's ResNet-56 for the paper budget; `RunSpec.neutral_depth` overrides. Its pooled penultimate features feed the
in-domain FID and, when no ImageNet VGG16 is on disk, the decoder's perceptual loss.

One model is trained per (dataset, train size, epochs, depth, seed) and cached under
`RESULTS_ROOT/<dataset>/_neutral/`, so runs on the same data reuse it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from rich.markup import escape
import torch.nn.functional as F
from torch import nn

from ..augment import augment_batch
from ..data.dataset import ImageData
from ..errors import RunDirError, UserError
from ..runtime import autocast, concat, infer, load_checkpoint, lr_schedule, on_device, pick_device, run_tasks, save_checkpoint, to_float
from ..storage import Location
from .context import StageContext

NEUTRAL_FORMAT = "regene-search/neutral-v1"
DEFAULT_DEPTH = 20
DEPTH_BY_BUDGET = {"smoke": 8, "default": 20, "paper": 56}
WARMUP_FRACTION = 0.2


@dataclass(frozen=True)
class NeutralConfig:
    """ResNet v1 for small images (He et al. 2016, section 4.2): 3 stages of `(depth - 2) / 6`
    basic blocks at widths w, 2w, 4w; stride 2 at the start of stages 2 and 3."""

    image_size: int
    channels: int
    num_classes: int
    depth: int = DEFAULT_DEPTH
    width: int = 16

    def __post_init__(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise UserError(f"neutral ResNet depth must be 6k + 2 with k >= 1 (8, 14, 20, 32, 56, ...), got {self.depth}")


@dataclass(frozen=True)
class NeutralTraining:
    epochs: int
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 5e-4
    seed: int = 0


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # Projection shortcut where the shape changes (option B of the ResNet paper).
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class NeutralResNet(nn.Module):
    """Inputs are float images in [0, 1], normalised to [-1, 1] inside, like `models.Classifier`."""

    def __init__(self, config: NeutralConfig) -> None:
        super().__init__()
        self.config = config
        blocks = (config.depth - 2) // 6
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = self._stage(w, w, blocks, stride=1)
        self.layer2 = self._stage(w, 2 * w, blocks, stride=2)
        self.layer3 = self._stage(2 * w, 4 * w, blocks, stride=2)
        self.fc = nn.Linear(4 * w, config.num_classes)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), *(BasicBlock(cout, cout, 1) for _ in range(blocks - 1)))

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of stages 1 and 2: the taps of the perceptual loss (texture and shape)."""
        x1 = self.layer1(self.stem(images * 2.0 - 1.0))
        return [x1, self.layer2(x1)]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (before `fc`): the embedding of the in-domain FID."""
        return self.layer3(self.feature_maps(images)[1]).mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


def train_neutral(
    data: ImageData, config: NeutralConfig, training: NeutralTraining, device: torch.device | None = None, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train from scratch on the train split; return a checkpoint dict with its test accuracy. `report` gets a line per epoch."""
    device = device or pick_device()
    torch.manual_seed(training.seed)
    model = on_device(NeutralResNet(config), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    schedule = lr_schedule(optimiser, training.epochs * math.ceil(len(data.train_x) / training.batch_size), warmup_fraction=WARMUP_FRACTION, cosine_from_start=True)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    gen = torch.Generator().manual_seed(training.seed + 17)
    for epoch in range(1, training.epochs + 1):
        started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        model.train()
        for idx in torch.randperm(len(train_x), generator=gen).to(device).split(training.batch_size):
            # Translations only: flips would be wrong for digits and the model serves every dataset.
            images = augment_batch(to_float(train_x[idx], device), hflip=False, generator=gen)
            with autocast(device):
                loss = F.cross_entropy(model(images), train_y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.detach() * len(idx)
        if report:
            report(f"neutral: epoch {epoch}/{training.epochs}  train loss {float(loss_sum) / len(train_x):.4f}  {time.perf_counter() - started:.1f} s")
    model.eval()
    logits, _ = predict(model, data.test_x, device)
    return {
        "format": NEUTRAL_FORMAT,
        "config": dataclasses.asdict(config),
        "training": dataclasses.asdict(training),
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        "train_images": len(data.train_x),
        "test_accuracy": float((logits.argmax(1) == data.test_y).float().mean()) if len(data.test_y) else float("nan"),
    }


def load_neutral(state: dict[str, Any], device: torch.device | str = "cpu") -> NeutralResNet:
    if state.get("format") != NEUTRAL_FORMAT:
        raise ValueError(f"not a regene-search neutral classifier checkpoint (format={state.get('format')!r})")
    model = NeutralResNet(NeutralConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return on_device(model, device).eval().requires_grad_(False)


def predict(model: NeutralResNet, images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> (logits, pooled features), both float32 on the CPU."""

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = model.features(to_float(x, device))
        return model.fc(features).float().cpu(), features.float().cpu()

    parts = infer(forward, images, device=device)
    logits = concat([a for a, _ in parts], torch.zeros(0, model.config.num_classes))
    return logits, concat([f for _, f in parts], torch.zeros(0, model.fc.in_features))


def cache_path(ctx: StageContext, config: NeutralConfig, training: NeutralTraining) -> Location:
    """`RESULTS_ROOT/<dataset>/_neutral/neutral-<hash>.pt`, keyed by everything that shapes the model."""
    key = {
        "format": NEUTRAL_FORMAT,
        "dataset": ctx.spec.dataset.name,
        "train_images": len(ctx.data.train_x),
        "config": dataclasses.asdict(config),
        "training": dataclasses.asdict(training),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return ctx.paths.neutral_checkpoint(digest)


def neutral_setup(ctx: StageContext) -> tuple[NeutralConfig, NeutralTraining]:
    data = ctx.data
    config = NeutralConfig(
        image_size=data.image_size,
        channels=data.channels,
        num_classes=data.num_classes,
        depth=ctx.spec.neutral_depth or DEPTH_BY_BUDGET.get(ctx.spec.budget, DEFAULT_DEPTH),
    )
    return config, NeutralTraining(epochs=ctx.spec.resolved_budget.neutral_epochs, seed=ctx.spec.seed)


def ensure_neutral(ctx: StageContext) -> tuple[dict[str, Any], Location, bool]:
    """The cached neutral checkpoint of this dataset, training it first (on the cluster) if absent.

    Returns (checkpoint, its path, whether it came from the cache). An unreadable cache file is
    retrained and replaced.
    """
    config, training = neutral_setup(ctx)
    path = cache_path(ctx, config, training)
    try:
        state = load_checkpoint(path, "not cached yet")
        load_neutral(state)
        return state, path, True
    except RunDirError:
        pass  # no cache file yet
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, not fatal
        ctx.console.print(f"neutral: cache {escape(str(path))} unreadable ({type(exc).__name__}), retraining")
    ctx.console.print(f"neutral: training ResNet-{config.depth} for {training.epochs} epochs on {len(ctx.data.train_x)} images")
    [state] = run_tasks(train_neutral, [(ctx.data, config, training)], cpus=ctx.spec.cpus_per_trial, gpus=ctx.spec.gpus_per_trial, report=ctx.say)
    save_checkpoint(state, path)
    return state, path, False
