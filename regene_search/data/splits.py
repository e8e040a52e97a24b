"""`Splits`: what every loader returns — classes plus a train and a test set, before validation."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Splits(NamedTuple):
    """uint8 (N, C, H, W) images and int64 labels; the registry carves validation from train."""

    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split_test(
    classes: tuple[str, ...], x: torch.Tensor, y: torch.Tensor, *, fraction: float, seed: int
) -> Splits:
    """Hold out a seeded `fraction` of each class as test, for sources that ship no test set.

    Stratified, so small classes still appear in test (any class with at least two images).
    """
    gen = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in range(len(classes)):
        idx = torch.nonzero(y == c).flatten()
        n_test = min(len(idx) - 1, max(1, round(len(idx) * fraction))) if len(idx) > 1 else 0
        test_idx.append(idx[torch.randperm(len(idx), generator=gen)[:n_test]])
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.cat(test_idx)] = True
    return Splits(classes, x[~is_test], y[~is_test], x[is_test], y[is_test])
