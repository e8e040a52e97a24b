"""CelebA faces at 64x64: centre crop 140 px, then resize, as in the ReGene paper (section 4.1).

Two layouts. torchvision's: `celeba/img_align_celeba/*.jpg` with `list_attr_celeba.txt`, labelled
by the binary "Male" attribute and split by `list_eval_partition.txt` when present. Or class
folders (e.g. the paper's CelebA-vs-Anime classifier: `celeba/` and `anime/`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from regene_search.data.cache import cached_tensors
from regene_search.data.folders import TEST_FRACTION, Preprocess, decode_images, load_folder_splits
from regene_search.data.splits import Splits, split_test
from regene_search.errors import DataError

ATTRIBUTE = "Male"
CLASSES = ("female", "male")  # ATTRIBUTE -1 / 1
PREPROCESS = Preprocess(size=64, channels=3, crop=140)
LOOKS_FOR = (
    "DATA_DIR[/celeba]/img_align_celeba + list_attr_celeba.txt (class = Male), "
    "or class folders DATA_DIR[/{train,test}]/<class>/*.jpg"
)


def load(data_dir: Path | None, cache_dir: Path, *, seed: int) -> Splits:
    if data_dir is None:
        raise DataError(
            "celeba: no automatic download (torchvision fetches it from Google Drive); "
            "pass --data-dir pointing at a folder with celeba/img_align_celeba + list_attr_celeba.txt, "
            "or with class folders"
        )
    if not data_dir.is_dir():
        raise DataError(f"celeba: data folder {data_dir} not found")
    for base in (data_dir / "celeba", data_dir):
        if (base / "img_align_celeba").is_dir():
            return _read_aligned(base, cache_dir, seed=seed)
    if not any(p.is_dir() for p in data_dir.iterdir()):
        raise DataError(f"celeba: no data in {data_dir}; expected {LOOKS_FOR}")
    return load_folder_splits(
        data_dir, tag="celeba", choose=lambda _: PREPROCESS, recipe=PREPROCESS.recipe, cache_dir=cache_dir, seed=seed
    )


def _read_aligned(base: Path, cache_dir: Path, *, seed: int) -> Splits:
    names, labels = _read_attributes(base / "list_attr_celeba.txt")
    files = [base / "img_align_celeba" / n for n in names]
    x = cached_tensors(
        cache_dir, "celeba", files, PREPROCESS.recipe, lambda: {"x": decode_images(files, PREPROCESS)}
    )["x"]
    partition = _read_partition(base / "list_eval_partition.txt", names)
    if partition is None:
        return split_test(CLASSES, x, labels, fraction=TEST_FRACTION, seed=seed)
    # The official "valid" partition (1) joins train: validation is carved from train later.
    test = partition == 2
    return Splits(CLASSES, x[~test], labels[~test], x[test], labels[test])


def _read_attributes(path: Path) -> tuple[list[str], torch.Tensor]:
    """`list_attr_celeba.txt`: a count line, a header of attribute names, then `file v1 v2 ...`."""
    if not path.is_file():
        raise DataError(f"{path}: not found (it labels img_align_celeba; or use class folders instead)")
    lines = path.read_text().splitlines()
    header = lines[1].split() if len(lines) > 1 else []
    if ATTRIBUTE not in header:
        raise DataError(f"{path}: no '{ATTRIBUTE}' column in the header line")
    col = header.index(ATTRIBUTE) + 1
    names, labels = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(header) + 1 or parts[col] not in ("1", "-1"):
            raise DataError(f"{path}:{number}: malformed line")
        names.append(parts[0])
        labels.append(int(parts[col] == "1"))
    if not names:
        raise DataError(f"{path}: no images listed")
    return names, torch.tensor(labels, dtype=torch.int64)


def _read_partition(path: Path, names: list[str]) -> torch.Tensor | None:
    """`list_eval_partition.txt`: `file 0|1|2` (train, valid, test); None when absent."""
    if not path.is_file():
        return None
    partition = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{number}: malformed line")
        partition[parts[0]] = int(parts[1])
    missing = [n for n in names if n not in partition]
    if missing:
        raise DataError(f"{path}: no partition for {len(missing)} listed images (first: {missing[0]})")
    return torch.tensor([partition[n] for n in names], dtype=torch.int64)
