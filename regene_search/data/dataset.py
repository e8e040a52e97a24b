"""`ImageData`: one image dataset held in memory as uint8 tensors, already split.

In a semi-supervised run (`run --labelled-fraction F`, issue 14) only a seeded, class-stratified
fraction of the train split keeps its labels (`train_x`, `train_y`); the rest of the train images
are `unlabelled_x`, without labels. Everything that needs labels reads `train_x` / `train_y` and so
sees the labelled images only; the decoders, which need none, train on `all_train_x`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


def check_labelled_fraction(fraction: float) -> float:
    """`fraction` if it is a share of the train split that can keep labels, (0, 1]; else ValueError."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"labelled fraction must be in (0, 1], got {fraction}")
    return fraction


@dataclass(frozen=True)
class ImageData:
    """Train / validation / test splits as uint8 (N, C, H, W) images and int64 (N,) labels, plus
    `unlabelled_x`: training images without labels (none unless `with_labelled_fraction` made some).

    The validation split is carved from train with a seeded permutation; test is untouched and
    kept for the final evaluation. Validation and test always keep their labels.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    unlabelled_x: torch.Tensor | None = None  # None: no unlabelled images (stored as an empty tensor)

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"{split}_x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split}_y must be int64 of length {x.shape[0]}")
        if self.unlabelled_x is None:
            object.__setattr__(self, "unlabelled_x", self.train_x.new_zeros((0, *self.train_x.shape[1:])))
        elif self.unlabelled_x.dtype != torch.uint8 or self.unlabelled_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError(
                f"unlabelled_x must be uint8 (N, {', '.join(map(str, self.train_x.shape[1:]))}) like train_x, "
                f"got {self.unlabelled_x.dtype} {tuple(self.unlabelled_x.shape)}"
            )

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def all_train_x(self) -> torch.Tensor:
        """Every training image, the labelled ones first, then the unlabelled: what a decoder trains on."""
        if not len(self.unlabelled_x):
            return self.train_x
        return torch.cat([self.train_x, self.unlabelled_x])

    @property
    def labelled_fraction(self) -> float:
        """The share of the training images that have labels (1.0 when none are unlabelled)."""
        total = len(self.train_x) + len(self.unlabelled_x)
        return len(self.train_x) / total if total else 1.0

    def subset(self, *, train: int | None = None, val: int | None = None, test: int | None = None, seed: int = 0) -> ImageData:
        """A seeded random subset of each split (None keeps the split whole).

        `train` counts labelled images; the unlabelled images are cut in the same proportion, so the
        labelled fraction stays what it was.
        """
        gen = torch.Generator().manual_seed(seed)

        def pick(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            if n is None or n >= len(x):
                return x, y
            idx = torch.randperm(len(x), generator=gen)[:n]
            return x[idx].contiguous(), y[idx].contiguous()

        tx, ty = pick(self.train_x, self.train_y, train)
        vx, vy = pick(self.val_x, self.val_y, val)
        sx, sy = pick(self.test_x, self.test_y, test)
        unlabelled = self.unlabelled_x
        if train is not None and len(unlabelled) and train < len(self.train_x):
            keep = round(len(unlabelled) * train / len(self.train_x))
            unlabelled = unlabelled[torch.randperm(len(unlabelled), generator=gen)[:keep]].contiguous()
        return ImageData(self.name, self.classes, tx, ty, vx, vy, sx, sy, unlabelled)

    def with_labelled_fraction(self, fraction: float, seed: int) -> ImageData:
        """Keep labels on a seeded `fraction` of each class's training images; the rest of the train
        split joins `unlabelled_x` without labels. Validation and test keep theirs.

        round(fraction x the train split) images keep labels, shared out in proportion to the class
        counts (largest remainders), and every class keeps at least one, so every class stays
        learnable; 1.0 returns the data unchanged.
        """
        if check_labelled_fraction(fraction) == 1.0:
            return self
        gen = torch.Generator().manual_seed(seed)
        classes, counts = self.train_y.unique(sorted=True, return_counts=True)
        keep = class_quotas(counts, round(fraction * len(self.train_y)))
        labelled = torch.zeros(len(self.train_y), dtype=torch.bool)
        for c, k in zip(classes.tolist(), keep.tolist(), strict=True):
            members = (self.train_y == c).nonzero().squeeze(1)
            labelled[members[torch.randperm(len(members), generator=gen)[:k]]] = True
        return dataclasses.replace(
            self,
            train_x=self.train_x[labelled].contiguous(),
            train_y=self.train_y[labelled].contiguous(),
            unlabelled_x=torch.cat([self.unlabelled_x, self.train_x[~labelled]]),
        )


def class_quotas(counts: torch.Tensor, total: int) -> torch.Tensor:
    """`total` split in proportion to `counts` by largest remainders (Hamilton's method), each at
    least 1 and at most its count: how many images of each class keep their label."""
    exact = counts.double() * total / counts.sum()
    quotas = exact.floor().long()
    short = total - int(quotas.sum())
    quotas[(exact - quotas).argsort(descending=True, stable=True)[:short]] += 1
    return quotas.clamp(min=1).minimum(counts)


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
