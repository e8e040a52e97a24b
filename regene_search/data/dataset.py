"""`ImageData`: one labelled image dataset held in memory as uint8 tensors, already split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageData:
    """Train / validation / test splits as uint8 (N, C, H, W) images and int64 (N,) labels.

    The validation split is carved from train with a seeded permutation; test is untouched and
    kept for the final evaluation.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"{split}_x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split}_y must be int64 of length {x.shape[0]}")

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, *, train: int | None = None, val: int | None = None, test: int | None = None, seed: int = 0) -> ImageData:
        """A seeded random subset of each split (None keeps the split whole)."""
        gen = torch.Generator().manual_seed(seed)

        def pick(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            if n is None or n >= len(x):
                return x, y
            idx = torch.randperm(len(x), generator=gen)[:n]
            return x[idx].contiguous(), y[idx].contiguous()

        tx, ty = pick(self.train_x, self.train_y, train)
        vx, vy = pick(self.val_x, self.val_y, val)
        sx, sy = pick(self.test_x, self.test_y, test)
        return ImageData(self.name, self.classes, tx, ty, vx, vy, sx, sy)


def split_train_val(
    name: str,
    classes: tuple[str, ...],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    val_fraction: float,
    seed: int,
) -> ImageData:
    """Carve a seeded validation split of `val_fraction` from train."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(train_x) * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return ImageData(
        name,
        classes,
        train_x[train_idx].contiguous(),
        train_y[train_idx].contiguous(),
        train_x[val_idx].contiguous(),
        train_y[val_idx].contiguous(),
        test_x,
        test_y,
    )
