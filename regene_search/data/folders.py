"""Image folders in torchvision's ImageFolder layout: list them, decode them fast, cache them.

`root/<class>/**/<image>`, classes sorted by name, images sorted within each folder, the same
extensions as `torchvision.datasets.ImageFolder`. With `root/train` and `root/test` both present
they are the two splits; otherwise the single folder is split with a seeded stratified fraction.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as F

from regene_search.data.cache import cached_tensors
from regene_search.data.splits import Splits, split_test
from regene_search.errors import DataError

log = logging.getLogger(__name__)

# Images per task sent to a worker process: large enough to hide the per-task overhead.
CHUNK = 512
TEST_FRACTION = 0.2

# PIL only warns below twice its own limit; any image this large is refused before decoding.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

# An image to decode: a file, or (a name for error messages, the encoded bytes).
Source = Path | tuple[str, bytes]


@dataclass(frozen=True)
class Preprocess:
    """How each decoded image becomes a (channels, size, size) uint8 tensor."""

    size: int
    channels: int
    crop: int | None = None  # centre crop (px) applied before resizing, e.g. 140 for CelebA

    @property
    def recipe(self) -> str:
        return f"size={self.size},channels={self.channels},crop={self.crop}"


@dataclass(frozen=True)
class Listing:
    """The images of one ImageFolder tree, with labels indexing `classes`."""

    classes: tuple[str, ...]
    items: list[Source]
    labels: torch.Tensor


def list_class_folders(root: Path, classes: Sequence[str] | None = None) -> Listing:
    """List `root/<class>/**/<image>`; with `classes` given, the folders must be exactly those."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    if classes is None and len(found) < 2:
        raise DataError(f"{root}: one class folder ({found[0]}); a classifier needs at least 2 (expected {root}/<class>/<image files>)")
    if classes is None:
        classes = found
    elif set(found) != set(classes):
        raise DataError(f"{root}: class folders {', '.join(found)} do not match the expected {', '.join(classes)}")
    items: list[Source] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        files = [f for f in walk_files(root / name, outside=root) if f.name.lower().endswith(IMG_EXTENSIONS)]
        if not files:
            empty.append(name)
        items += files
        labels += [label] * len(files)
    if empty:
        raise DataError(f"{root}: empty class folders {', '.join(empty)} (no {'/'.join(IMG_EXTENSIONS)} images)")
    return Listing(tuple(classes), items, torch.tensor(labels, dtype=torch.int64))


def walk_files(top: Path, *, outside: Path | None = None) -> list[Path]:
    """Every file under `top`, sorted, following links but entering each real folder once, and
    never `outside` (the folder of all classes: a link up to it would relabel other classes).

    `os.walk(followlinks=True)` alone loops until paths get too long on a link to an ancestor;
    here each folder is keyed by (device, inode) and a repeat is skipped.
    """
    seen = {_identity(outside)} if outside is not None else set()
    files: list[Path] = []
    for dirpath, dirnames, fnames in os.walk(top, followlinks=True):
        identity = _identity(dirpath)
        if identity in seen:
            dirnames.clear()
            continue
        seen.add(identity)
        dirnames.sort()
        files += [Path(dirpath, f) for f in fnames]
    return sorted(files)


def _identity(folder: str | Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def open_image(source: Source | io.BytesIO, name: str) -> Image.Image:
    """`Image.open` (header only) that refuses unreadable files and images over MAX_PIXELS with a DataError."""
    limit = f"the {MAX_PIXELS / 1e6:.0f}-megapixel limit (a decompression bomb?); shrink or remove it"
    try:
        with warnings.catch_warnings():  # PIL warns (a stray stderr line) up to twice its limit, where we refuse
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: over {limit}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{name}: unreadable image ({e})") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise DataError(f"{name}: {width}x{height} pixels is over {limit}")
    return im


def list_splits(root: Path, classes: Sequence[str] | None = None) -> tuple[Listing, Listing | None]:
    """(train, test) listings when `root/train` and `root/test` exist, else (everything, None)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = list_class_folders(root / "train", classes)
        test = list_class_folders(root / "test", train.classes)
        return train, test
    return list_class_folders(root, classes), None


def load_folder_splits(
    root: Path,
    *,
    tag: str,
    choose: Callable[[Sequence[Path]], Preprocess],
    recipe: str,
    cache_dir: Path,
    seed: int,
    classes: Sequence[str] | None = None,
) -> Splits:
    """Decode (or load from the cache) every image under `root` and return train/test splits.

    `choose` picks the preprocessing from the file list; it only runs on a cache miss, so
    `recipe` must name everything it depends on.
    """
    train, test = list_splits(root, classes)
    files = train.items + (test.items if test else [])

    def build() -> dict[str, torch.Tensor]:
        return {"x": decode_images(files, choose(files))}

    x = cached_tensors(cache_dir, tag, files, recipe, build)["x"]
    if test is None:
        return split_test(train.classes, x, train.labels, fraction=TEST_FRACTION, seed=seed)
    n = len(train.items)
    return Splits(train.classes, x[:n], train.labels, x[n:], test.labels)


def decode_images(sources: Sequence[Source], pre: Preprocess) -> torch.Tensor:
    """Decode and preprocess `sources` into one uint8 (N, C, size, size) tensor, in order."""
    log.info("decoding %d images (%s)", len(sources), pre.recipe)
    chunks = [sources[i : i + CHUNK] for i in range(0, len(sources), CHUNK)]
    return torch.cat(map_chunks(partial(_decode_chunk, pre=pre), chunks))


def map_chunks(fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
    """`[fn(c) for c in chunks]`, spread over worker processes when there is enough work.

    Processes, not threads: PIL spends most of a small JPEG's time parsing headers in Python
    under the GIL (and torchvision's decoders, deprecated since 0.29, hold the GIL throughout),
    so threads measured little faster than one. Workers are forked (no re-import of torch) and
    capped by `torch.get_num_threads()`, which follows OMP_NUM_THREADS and thus a Ray trial's CPU
    share. Only Linux forks safely with torch loaded; elsewhere decoding stays in-process.
    """
    workers = min(torch.get_num_threads(), len(chunks))
    if workers <= 1 or sys.platform != "linux":
        return [fn(c) for c in chunks]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(fn, chunks))


def _decode_chunk(sources: Sequence[Source], pre: Preprocess) -> torch.Tensor:
    return torch.stack([_decode(s, pre) for s in sources])


def _decode(source: Source, pre: Preprocess) -> torch.Tensor:
    name, stream = (str(source), source) if isinstance(source, Path) else (source[0], io.BytesIO(source[1]))
    try:
        with open_image(stream, name) as im:
            if im.mode.startswith("I;16"):  # 16-bit grayscale: PIL's convert would clip, not scale
                im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
            arr = np.asarray(im.convert("L" if pre.channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: unreadable image ({e})") from None
    img = torch.from_numpy(arr.copy()).view(arr.shape[0], arr.shape[1], pre.channels).permute(2, 0, 1)
    if pre.crop is not None:
        img = F.center_crop(img, [pre.crop, pre.crop])
    if img.shape[-2:] != (pre.size, pre.size):  # shorter side to `size`, then centre square
        img = F.center_crop(F.resize(img, pre.size, antialias=True), [pre.size, pre.size])
    return img
