"""The paper's VGG-style classifier (encoder + latent + head) and its matching decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LATENT_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid", "identity")
SUPPORTED_IMAGE_SIZES = (28, 32, 64)


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
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {self.image_size}")
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
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {self.image_size}")

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


def _activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU(),
        "leaky_relu": nn.LeakyReLU(0.2),
        "gelu": nn.GELU(),
        "tanh": nn.Tanh(),
        "sigmoid": nn.Sigmoid(),
        "identity": nn.Identity(),
    }[name]


def _conv_bn_act(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]


class Classifier(nn.Module):
    """VGG-style encoder, a dense latent layer `z`, and a linear head.

    `encode(x)` gives the ReGene latent `z`; `head(z)` gives logits. Inputs are float images in
    [0, 1], shape (N, C, H, W); they are normalised to [-1, 1] inside the model so every caller
    (trial, decoder stage, filter) feeds the same thing.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        cin = config.channels
        for block in range(config.blocks):
            cout = config.base_width * 2 ** min(block, 3)
            for _ in range(config.convs_per_block):
                layers += _conv_bn_act(cin, cout)
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        spatial = config.image_size >> config.blocks
        self.latent = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(cin * spatial * spatial, config.latent_dim),
            _activation(config.latent_activation),
        )
        self.head = nn.Linear(config.latent_dim, config.num_classes)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.latent(self.features(images * 2.0 - 1.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))


class Decoder(nn.Module):
    """Maps a latent `z` back to an image in [0, 1] (sigmoid output)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        blocks = config.up_blocks
        width = config.base_width * 2 ** min(blocks, 3)
        self.start_width = width
        self.dense = nn.Sequential(
            nn.Linear(config.latent_dim, width * config.start_size**2),
            nn.BatchNorm1d(width * config.start_size**2),
            nn.LeakyReLU(0.2),
        )
        layers: list[nn.Module] = []
        for _ in range(blocks):
            cout = max(config.base_width, width // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_act(width, cout)]
            width = cout
        layers += [nn.Conv2d(width, config.channels, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, self.start_width, self.config.start_size, self.config.start_size)
        return self.body(x)
