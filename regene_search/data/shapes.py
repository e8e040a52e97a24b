"""`shapes`: a small labelled image set generated from a seed, for tests and quick demos.

Four classes of filled shapes (circle, square, triangle, cross), each at a random position, size
and rotation, in a bright random colour on a dark random background with a little noise. 32x32
RGB, balanced classes, no files: everything is drawn at once with tensor operations.
"""

from __future__ import annotations

import math

import torch

from regene_search.data.splits import Splits

CLASSES = ("circle", "square", "triangle", "cross")
SIZE = 32
N_TRAIN = 6000
N_TEST = 1000


def load(seed: int) -> Splits:
    x, y = generate(N_TRAIN + N_TEST, seed=seed)
    return Splits(CLASSES, x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def generate(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` uint8 (3, 32, 32) images and int64 labels.

    Labels come in shuffled blocks holding each class once, so every prefix whose length is a
    multiple of 4 (the train and test sets) is exactly balanced.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    blocks = -(-n // len(CLASSES))
    y = torch.rand(blocks, len(CLASSES), generator=gen).argsort(dim=1).flatten()[:n]
    r = uniform(6.0, 12.0, n, 1, 1)  # circumradius in pixels
    cx = r + uniform(0.0, 1.0, n, 1, 1) * (SIZE - 2 * r)  # keeps the whole shape inside
    cy = r + uniform(0.0, 1.0, n, 1, 1) * (SIZE - 2 * r)
    angle = uniform(0.0, 2 * math.pi, n, 1, 1)
    grid = torch.arange(SIZE, dtype=torch.float32) + 0.5
    dx, dy = grid.view(1, 1, SIZE) - cx, grid.view(1, SIZE, 1) - cy
    # Coordinates in the shape's own rotated frame.
    u = dx * angle.cos() + dy * angle.sin()
    v = -dx * angle.sin() + dy * angle.cos()
    au, av = u.abs(), v.abs()
    circle = u * u + v * v <= r * r
    square = torch.maximum(au, av) <= r * 0.7
    # Equilateral triangle: inside all three edges, each at distance r/2 from the centre.
    triangle = torch.ones_like(circle)
    for k in range(3):
        phi = math.pi / 2 + 2 * math.pi * k / 3
        triangle &= u * math.cos(phi) + v * math.sin(phi) <= r / 2
    arm = r * 0.3
    cross = ((au <= arm) & (av <= r)) | ((av <= arm) & (au <= r))
    mask = torch.stack([circle, square, triangle, cross], dim=1)[torch.arange(n), y].unsqueeze(1)

    background = uniform(0.0, 80.0, n, 3, 1, 1)
    foreground = uniform(120.0, 255.0, n, 3, 1, 1)
    noise = uniform(-12.0, 12.0, n, 1, SIZE, SIZE)
    x = torch.where(mask, foreground, background) + noise
    return x.round().clamp(0, 255).to(torch.uint8), y
