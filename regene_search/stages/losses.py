"""The decoder's loss: weighted MAE + (1 - SSIM) + perceptual distance, on a per-epoch schedule.

Section 4.2 of the paper: SSIM and perceptual loss are weighted high in the first epochs so the
decoder learns the global outline and texture first, then reduced so pixel-wise error dominates;
MAE stays high throughout. Perceptual features come from ImageNet VGG16 when its weights are on
disk, otherwise from the dataset's neutral classifier (`neutral.py`); which one is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn

from ..errors import UserError
from ..runtime import autocast
from ..weights import load_state_dict_file
from .neutral import load_neutral

VGG_BACKBONE = "vgg16-imagenet"
NEUTRAL_BACKBONE = "neutral-resnet"
VGG_HUB_FILE = "vgg16-397923af.pth"
# torchvision's vgg16().features up to relu3_3; taps after relu1_2, relu2_2 and relu3_3.
VGG_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256))
VGG_POOLS = (4, 9)
VGG_TAPS = (3, 8, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossSchedule:
    """Weights of the three loss terms in each epoch.

    `mae` is constant. The SSIM and perceptual weights fall from `*_start` in the first epoch to
    `*_end` in the last along a half cosine (slow at both ends), following the paper's heuristic.
    The perceptual term ends at 0: pixels alone polish the last epoch, and a zero weight skips
    the backbone's cost.
    """

    mae: float = 1.0
    ssim_start: float = 1.0
    ssim_end: float = 0.1
    perceptual_start: float = 1.0
    perceptual_end: float = 0.0

    def weights(self, epoch: int, epochs: int) -> tuple[float, float, float]:
        """(w_mae, w_ssim, w_perceptual) of 1-based `epoch` out of `epochs`."""
        t = (epoch - 1) / (epochs - 1) if epochs > 1 else 0.0
        fade = 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
        return (
            self.mae,
            self.ssim_end + (self.ssim_start - self.ssim_end) * fade,
            self.perceptual_end + (self.perceptual_start - self.perceptual_end) * fade,
        )


def ssim_window(image_size: int) -> int:
    """Gaussian window of SSIM: 7 px for 28/32 px images, 11 px (the standard) from 64 px."""
    return 7 if image_size <= 32 else 11


def ssim_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim(recon, target, data_range=1.0, size_average=True, win_size=ssim_window(target.shape[-1]))


class VGGTaps(nn.Module):
    """Frozen VGG16 convolutions up to relu3_3, on [0, 1] images of 1 or 3 channels."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(VGG_TAPS[-1] + 1):
            conv = next((c for c in VGG_CONVS if c[0] == index), None)
            layers.append(nn.Conv2d(conv[1], conv[2], 3, padding=1) if conv else nn.MaxPool2d(2) if index in VGG_POOLS else nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG_TAPS:
                taps.append(x)
        return taps


class NeutralTaps(nn.Module):
    """Frozen stage-1 and stage-2 feature maps of the neutral ResNet."""

    def __init__(self, checkpoint: dict[str, Any]) -> None:
        super().__init__()
        self.model = load_neutral(checkpoint)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model.feature_maps(images)


def load_vgg_state(path: Path) -> dict[str, torch.Tensor]:
    """The VGG16 conv weights up to relu3_3 from a torchvision vgg16 state dict file.

    Accepts a whole `vgg16-397923af.pth` or a file holding only its `features.*` tensors.
    A missing, corrupt or mismatched file is a `UserError`.
    """
    loaded = load_state_dict_file(path, "VGG16 weights")
    state = {}
    for index, cin, cout in VGG_CONVS:
        for name, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            tensor = loaded.get(f"features.{index}.{name}")
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                raise UserError(f"VGG16 weights file {path} lacks features.{index}.{name} of shape {shape}: not torchvision vgg16 weights")
            state[f"features.{index}.{name}"] = tensor.float()
    return state


def find_vgg_weights(explicit: str | None) -> Path | None:
    """`--vgg-weights PATH` if given, else torchvision's file in the torch hub cache if present."""
    if explicit:
        return Path(explicit)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG_HUB_FILE
    return cached if cached.is_file() else None


def build_taps(backbone: dict[str, Any]) -> nn.Module:
    """The frozen feature extractor described by `{"name": ..., "state": ...}`."""
    if backbone["name"] == VGG_BACKBONE:
        return VGGTaps(backbone["state"])
    if backbone["name"] == NEUTRAL_BACKBONE:
        return NeutralTaps(backbone["state"])
    raise ValueError(f"unknown perceptual backbone {backbone['name']!r}")


def perceptual_loss(taps: nn.Module, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared distance of channel-normalised features, summed over channels, averaged over positions
    and taps: LPIPS without its learned channel weights (Zhang et al. 2018, `lpips.normalize_tensor`).

    Each position's feature vector is scaled to unit length first, so the loss lies in [0, 4] for
    any backbone (VGG or the neutral judge) and one schedule of weights serves both, and a few
    high-magnitude channels cannot dominate. The relative feature MSE it replaces let a judge trained
    by SGD at a high learning rate pull short decoder trainings away from the pixels: val MAE 0.33 to
    0.53 instead of 0.07 after 2 epochs on 2,000 MNIST images; 0.0544 against 0.0571 after the smoke
    budget's 4 epochs on 5,000.
    """

    def unit(features: torch.Tensor) -> torch.Tensor:
        features = features.float()
        return features / features.pow(2).sum(1, keepdim=True).add(1e-10).sqrt()

    with torch.no_grad():
        wanted = [unit(f) for f in taps(target)]
    got = [unit(f) for f in taps(recon)]
    return torch.stack([(g - w).pow(2).sum(1).mean() for g, w in zip(got, wanted, strict=True)]).mean()


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, weights: tuple[float, float, float], taps: nn.Module | None) -> dict[str, torch.Tensor]:
    """The decoder's loss on one batch: `mae`, `ssim` (1 - SSIM), `perceptual` and their weighted sum `total`.

    `weights` are (w_mae, w_ssim, w_perceptual) as `LossSchedule.weights` gives them. Call it outside
    autocast: MAE and SSIM run in fp32, only the perceptual backbone under autocast. A perceptual
    weight of 0 skips the backbone (the term is stored as 0).
    """
    w_mae, w_ssim, w_perc = weights
    recon = recon.float()
    terms = {"mae": F.l1_loss(recon, target), "ssim": ssim_loss(recon, target)}
    if w_perc > 0:
        if taps is None:
            raise ValueError("a perceptual weight > 0 needs the perceptual backbone's taps")
        with autocast(recon.device):
            terms["perceptual"] = perceptual_loss(taps, recon, target)
    else:
        terms["perceptual"] = torch.zeros((), device=recon.device)
    terms["total"] = w_mae * terms["mae"] + w_ssim * terms["ssim"] + w_perc * terms["perceptual"]
    return terms
