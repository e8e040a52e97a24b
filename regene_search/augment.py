"""Augmentation on whole batches of image tensors: no per-sample Python in the hot loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translate(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random offset in [-pad, pad] (reflect padding), as one gather."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment_batch(images: torch.Tensor, *, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate by up to 2 px (4 px at 64 px), and flip left-right where flips are valid."""
    images = random_translate(images, max(2, images.shape[-1] // 16), generator)
    return random_hflip(images, generator) if hflip else images
