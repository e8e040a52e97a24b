"""The paper's VGG-style classifier (encoder + latent + head) and its matching decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import DecoderConfig, EncoderConfig
from .runtime import on_device

CLASSIFIER_FORMAT = "regene-search/classifier-v1"

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


def load_classifier(state: dict[str, Any], device: torch.device | str = "cpu") -> Classifier:
    """Rebuild the classifier of a checkpoint dict (as loaded with weights_only=True), in eval mode."""
    if state.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"not a regene-search classifier checkpoint (format={state.get('format')!r})")
    model = Classifier(EncoderConfig(**state["encoder_config"]))
    model.load_state_dict(state["model"])
    return on_device(model, device).eval()


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
