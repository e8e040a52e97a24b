"""Writers of small files in the real on-disk formats the loaders read (IDX, CIFAR pickles, images)."""

from __future__ import annotations

import pickle
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from regene_search.errors import DataError

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def one_line(err: DataError) -> str:
    """The message, checked to be the single line the CLI prints."""
    message = str(err)
    assert message and "\n" not in message
    return message


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file: magic 0x0000 0x08 ndim, big-endian int32 dimensions, then uint8 values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    """torchvision's raw layout `root/<folder>/raw`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test) % 10).astype(np.uint8),
    }
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", arrays["train_x"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["train_y"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_x"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


def write_cifar_pickles(folder: Path, per_batch: int = 4, seed: int = 0) -> dict:
    """`data_batch_1..5`, `test_batch` and `batches.meta` as the official python version pickles them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        filenames = [f"{i}.png" for i in range(per_batch)]
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": filenames}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CIFAR_CLASSES), "num_vis": 3072}, f)
    return batches


def write_image(path: Path, array: np.ndarray) -> Path:
    """(H, W) grayscale or (H, W, 3) RGB uint8, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_class_folders(
    root: Path,
    classes: Sequence[str],
    per_class: int,
    *,
    size: tuple[int, int] = (32, 32),
    gray: bool = False,
    suffix: str = ".png",
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """`root/<class>/<i><suffix>` random images of `size` (height, width); returns them by class."""
    rng = np.random.default_rng(seed)
    shape = size if gray else (*size, 3)
    written: dict[str, list[np.ndarray]] = {}
    for name in classes:
        written[name] = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(per_class)]
        for i, array in enumerate(written[name]):
            write_image(root / name / f"{i:04d}{suffix}", array)
    return written


def make_tarball(src: Path, tar_path: Path) -> Path:
    """A gzipped tarball of `src`'s contents, members relative to `src` (like the shared copy)."""
    with tarfile.open(tar_path, "w:gz") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name)
    return tar_path
