"""CIFAR-10 from torchvision's pickle batches, from JPEG class folders, or from a tarball of them."""

from __future__ import annotations

import pickle
from typing import Any
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from regene_search.data import tarball
from regene_search.data.cache import cached_tensors
from regene_search.data.folders import Preprocess, decode_images, load_folder_splits
from regene_search.data.splits import Splits
from regene_search.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TARBALL = "cifar10-jpg.tar.gz"
LOOKS_FOR = (
    f"DATA_DIR/{CIFAR10.base_folder} (torchvision's pickles), "
    f"DATA_DIR[/cifar10]/{{train,test}}/<class>/*.jpg, or DATA_DIR/{TARBALL}"
)
PREPROCESS = Preprocess(size=32, channels=3)


def load(data_dir: Path | None, cache_dir: Path) -> Splits:
    if data_dir is None:
        return _read_pickles(_download(cache_dir / "data"))
    if data_dir.is_file():
        return _read_tarball(data_dir, cache_dir)
    if not data_dir.is_dir():
        raise DataError(f"cifar10: data folder {data_dir} not found")
    if (data_dir / CIFAR10.base_folder).is_dir():
        return _read_pickles(data_dir / CIFAR10.base_folder)
    if (data_dir / "data_batch_1").is_file():
        return _read_pickles(data_dir)
    if (root := _folders_root(data_dir)) is not None:
        return _read_folders(root, cache_dir)
    if (data_dir / TARBALL).is_file():
        return _read_tarball(data_dir / TARBALL, cache_dir)
    raise DataError(f"cifar10: no data in {data_dir}; expected {LOOKS_FOR}")


def _folders_root(folder: Path) -> Path | None:
    for root in (folder, folder / "cifar10"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    return None


def _read_tarball(path: Path, cache_dir: Path) -> Splits:
    def build() -> dict[str, torch.Tensor]:
        train, test = tarball.read_splits(path, CLASSES)
        x = decode_images(train.items + test.items, PREPROCESS)
        n = len(train.items)
        return {"train_x": x[:n], "train_y": train.labels, "test_x": x[n:], "test_y": test.labels}

    # Keyed on the tarball alone, so a cache hit never opens it.
    t = cached_tensors(cache_dir, "cifar10", [path], PREPROCESS.recipe, build)
    return Splits(CLASSES, t["train_x"], t["train_y"], t["test_x"], t["test_y"])


def _read_folders(root: Path, cache_dir: Path) -> Splits:
    # root/train and root/test exist, so the seed (used only to split a lone folder) plays no part.
    return load_folder_splits(
        root,
        tag="cifar10",
        choose=lambda _: PREPROCESS,
        recipe=PREPROCESS.recipe,
        cache_dir=cache_dir,
        seed=0,
        classes=CLASSES,
    )


def _download(root: Path) -> Path:
    folder = root / CIFAR10.base_folder
    if not all((folder / name).is_file() for name, _ in CIFAR10.train_list + CIFAR10.test_list):
        try:
            CIFAR10(root, train=False, download=True)
        except (RuntimeError, OSError):
            raise DataError(
                f"cifar10: no data found in {folder} and download failed (no network?); "
                f"pass --data-dir pointing at a folder containing {CIFAR10.base_folder}, "
                f"train/ + test/ class folders, or {TARBALL}"
            ) from None
    return folder


def _read_pickles(folder: Path) -> Splits:
    """Read the batches directly: torchvision's CIFAR10 insists on the official files' md5s."""
    meta = _unpickle(folder / CIFAR10.meta["filename"])
    classes = tuple(meta.get(CIFAR10.meta["key"], ()))
    if len(classes) != len(CLASSES):
        raise DataError(f"{folder / CIFAR10.meta['filename']}: expected {len(CLASSES)} label names, got {len(classes)}")
    train = [_read_batch(folder / name) for name, _ in CIFAR10.train_list]
    test_x, test_y = _read_batch(folder / CIFAR10.test_list[0][0])
    return Splits(classes, torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entry = _unpickle(path)
    data = np.asarray(entry.get("data"))
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 rows of 3072 pixels, got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {len(data)} integer labels, got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels out of range 0..{len(CLASSES) - 1}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels.astype(np.int64))


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles: admit only what they hold (arrays in plain containers), so a
    crafted batch cannot run code when loaded."""

    ALLOWED = {
        (f"numpy.{core}.{module}", name)  # numpy 1 and 2 spellings; _frombuffer: protocol 5 arrays
        for core in ("core", "_core")
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes under protocol 2

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (torchvision's {CIFAR10.base_folder} layout)") from None
    except Exception as e:  # unpickling garbage can raise almost any exception type
        raise DataError(f"{path}: corrupt CIFAR-10 file ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: corrupt CIFAR-10 file (not a dict)")
    return entry
