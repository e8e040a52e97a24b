"""`imagefolder:PATH`: any ImageFolder tree, sized to the nearest size the models support.

Size rule: 28 when every image is a 28x28 grayscale image (MNIST-like), 64 when every image's
shorter side is at least 64, else 32. Channels: 1 when every image is grayscale, else 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from regene_search.data.folders import CHUNK, Preprocess, list_splits, load_folder_splits, map_chunks, open_image
from regene_search.data.splits import Splits


def load(root: Path, cache_dir: Path, *, seed: int) -> Splits:
    return load_folder_splits(
        root, tag="imagefolder", choose=choose_preprocess, recipe="auto", cache_dir=cache_dir, seed=seed
    )


def inspect(root: Path) -> tuple[tuple[str, ...], Preprocess]:
    """The classes and the preprocessing `load` would use, from the image headers only."""
    train, test = list_splits(root)
    return train.classes, choose_preprocess(train.items + (test.items if test else []))


def choose_preprocess(paths: Sequence[Path]) -> Preprocess:
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    headers = [h for chunk in map_chunks(_headers, chunks) for h in chunk]
    gray = all(mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16") for mode, _ in headers)
    if gray and all(size == (28, 28) for _, size in headers):
        return Preprocess(28, 1)
    size = 64 if min(min(size) for _, size in headers) >= 64 else 32
    return Preprocess(size, 1 if gray else 3)


def _headers(paths: Sequence[Path]) -> list[tuple[str, tuple[int, int]]]:
    out = []
    for p in paths:
        with open_image(p, str(p)) as im:  # reads the header only, no pixel decoding
            out.append((im.mode, im.size))
    return out
