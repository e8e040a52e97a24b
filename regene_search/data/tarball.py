"""ImageFolder trees inside a tar archive, read straight into memory without extracting.

Measured on the 60k-file CIFAR-10 tarball (2 busy cores): streaming its members takes 4-6 s,
`tarfile.extractall` 11-15 s (a file creation, chmod and utime per member), and extraction would
leave ~240 MB of small files behind. The decoded tensors are cached, so nothing is extracted.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from regene_search.data.folders import Listing
from regene_search.errors import DataError

SPLITS = ("train", "test")


def read_splits(tarball: Path, classes: Sequence[str]) -> tuple[Listing, Listing]:
    """Read `train/<class>/<image>` and `test/<class>/<image>` members, optionally under one
    top-level folder (e.g. `cifar10/train/...`), into (train, test) listings of encoded bytes."""
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {c: [] for c in classes} for s in SPLITS}
    try:
        with tarfile.open(tarball, "r|*") as tar:  # streaming: one pass, no seeking
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(IMG_EXTENSIONS):
                    continue
                parts = PurePosixPath(member.name).parts
                if parts and parts[0] not in SPLITS:
                    parts = parts[1:]
                if len(parts) < 3 or parts[0] not in SPLITS:
                    continue
                split, name = parts[0], parts[1]
                if name not in found[split]:
                    expected = ", ".join(classes)
                    raise DataError(f"{tarball}: unexpected class folder {split}/{name} (expected {expected})")
                found[split][name].append((f"{tarball}:{member.name}", tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{tarball}: cannot read tarball ({e})") from None
    return _listing(tarball, "train", found["train"], classes), _listing(tarball, "test", found["test"], classes)


def _listing(tarball: Path, split: str, found: dict[str, list[tuple[str, bytes]]], classes: Sequence[str]) -> Listing:
    if not any(found.values()):
        raise DataError(f"{tarball}: no {split}/<class>/<image> files inside")
    empty = [c for c in classes if not found[c]]
    if empty:
        raise DataError(f"{tarball}: empty class folders {', '.join(f'{split}/{c}' for c in empty)}")
    items, labels = [], []
    for label, name in enumerate(classes):
        members = sorted(found[name])  # by name, as ImageFolder sorts files
        items += members
        labels += [label] * len(members)
    return Listing(tuple(classes), items, torch.tensor(labels, dtype=torch.int64))
