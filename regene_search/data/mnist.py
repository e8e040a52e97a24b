"""MNIST and Fashion-MNIST from torchvision's raw layout: `DATA_DIR/<MNIST|FashionMNIST>/raw`."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import MNIST, FashionMNIST

from regene_search.data.idx import IMAGES_MAGIC, LABELS_MAGIC, check_idx
from regene_search.data.splits import Splits
from regene_search.errors import DataError

DATASETS: dict[str, type[MNIST]] = {"mnist": MNIST, "fashion-mnist": FashionMNIST}
LOOKS_FOR = {
    "mnist": "DATA_DIR/MNIST/raw (torchvision's raw IDX files)",
    "fashion-mnist": "DATA_DIR/FashionMNIST/raw (torchvision's raw IDX files)",
}
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def classes(name: str) -> tuple[str, ...]:
    return tuple(DATASETS[name].classes)


def load(name: str, data_dir: Path | None, cache_dir: Path) -> Splits:
    root = _download(name, cache_dir / "data") if data_dir is None else _find_root(name, data_dir)
    # torchvision refuses to read either split unless all four files exist: check them all first.
    _check(name, root, train=True)
    _check(name, root, train=False)
    train_x, train_y = _read(name, root, train=True)
    test_x, test_y = _read(name, root, train=False)
    return Splits(classes(name), train_x, train_y, test_x, test_y)


def _raw(name: str, root: Path) -> Path:
    return root / DATASETS[name].__name__ / "raw"


def _find_root(name: str, data_dir: Path) -> Path:
    """torchvision wants the folder above `MNIST/raw`; also accept `MNIST` or `MNIST/raw` itself."""
    if data_dir.exists() and not data_dir.is_dir():  # not its parent's data, silently
        raise DataError(f"{name}: --data-dir {data_dir} is a file; name the folder that holds {DATASETS[name].__name__}/raw")
    for root in (data_dir, data_dir.parent, data_dir.parent.parent):
        if _raw(name, root).is_dir():
            return root
    if not data_dir.is_dir():
        raise DataError(f"{name}: data folder {data_dir} not found")
    raise DataError(f"{name}: {_raw(name, data_dir)} not found (torchvision's raw layout of IDX files)")


def _download(name: str, root: Path) -> Path:
    if all((_raw(name, root) / f).is_file() for f in (*FILES[True], *FILES[False])):
        return root
    try:
        DATASETS[name](root, train=True, download=True)
    except (RuntimeError, OSError):
        raise DataError(
            f"{name}: no data found in {_raw(name, root)} and download failed (no network?); "
            f"pass --data-dir pointing at a folder containing {DATASETS[name].__name__}/raw"
        ) from None
    return root


def _check(name: str, root: Path, *, train: bool) -> None:
    images, labels = (_raw(name, root) / f for f in FILES[train])
    n, rows, cols = check_idx(images, IMAGES_MAGIC)
    (m,) = check_idx(labels, LABELS_MAGIC)
    if (rows, cols) != (28, 28):
        raise DataError(f"{images}: images are {rows}x{cols}, expected 28x28")
    if n != m:
        raise DataError(f"{images}: {n} images but {labels.name} has {m} labels")


def _read(name: str, root: Path, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ds = DATASETS[name](root, train=train, download=False)
    y = ds.targets.to(torch.int64)
    if len(y) and int(y.max()) >= len(ds.classes):
        labels = _raw(name, root) / FILES[train][1]
        raise DataError(f"{labels}: label {int(y.max())} out of range (expected 0..{len(ds.classes) - 1})")
    return ds.data.unsqueeze(1).contiguous(), y
