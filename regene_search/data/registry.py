"""The dataset registry: names, what each needs, and `load_dataset`, the one way to get data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from regene_search.data import celeba, cifar, imagefolder, mnist, shapes
from regene_search.data.cache import default_cache_dir
from regene_search.data.dataset import ImageData, split_train_val
from regene_search.data.names import FAMILIES, DatasetRef
from regene_search.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where its loader looks for it."""

    name: str
    image_size: int  # 28, 32 or 64; 0 when the folder decides (the generic imagefolder entry)
    channels: int  # 1 or 3; 0 when the folder decides
    classes: tuple[str, ...] | None  # None when the folder decides (celeba, imagefolder)
    looks_for: str
    hflip: bool  # whether a horizontal flip keeps the label (not for digits)


IMAGEFOLDER_LOOKS_FOR = "PATH/{train,test}/<class>/*, or PATH/<class>/* (20% held out as test)"

_DATASETS = {
    info.name: info
    for info in (
        DatasetInfo("mnist", 28, 1, mnist.classes("mnist"), mnist.LOOKS_FOR["mnist"], hflip=False),
        DatasetInfo(
            "fashion-mnist", 28, 1, mnist.classes("fashion-mnist"), mnist.LOOKS_FOR["fashion-mnist"], hflip=True
        ),
        DatasetInfo("cifar10", 32, 3, cifar.CLASSES, cifar.LOOKS_FOR, hflip=True),
        DatasetInfo("celeba", 64, 3, None, celeba.LOOKS_FOR, hflip=True),
        DatasetInfo("shapes", 32, 3, shapes.CLASSES, "nothing: generated from the seed", hflip=True),
        # No flips: an arbitrary folder may hold orientation-dependent images (text, digits).
        DatasetInfo("imagefolder", 0, 0, None, IMAGEFOLDER_LOOKS_FOR, hflip=False),
    )
}


def list_datasets() -> list[DatasetInfo]:
    return list(_DATASETS.values())


def dataset_info(name: DatasetRef | str) -> DatasetInfo:
    """The registry entry for `name`; `imagefolder:PATH` inspects PATH's image headers."""
    ref = DatasetRef.of(name)
    if ref.path is None:
        return _DATASETS[ref.family]
    classes, pre = imagefolder.inspect(ref.path)
    looks_for = IMAGEFOLDER_LOOKS_FOR.replace("PATH", str(ref.path))
    return DatasetInfo(ref.name, pre.size, pre.channels, classes, looks_for, hflip=False)


def load_dataset(
    name: DatasetRef | str,
    data_dir: Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    cache_dir: Path | None = None,
) -> ImageData:
    """Load `name` into memory with a validation split carved from train by `seed`.

    `data_dir` is where the files are (see `dataset_info(name).looks_for`); None tries
    torchvision's download into the cache. Decoded image folders are cached in `cache_dir`
    (default `$REGENE_SEARCH_CACHE` or `~/.cache/regene-search`). Raises `DataError`.
    """
    ref = DatasetRef.of(name)
    family = ref.family
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if family in ("mnist", "fashion-mnist"):
        splits = mnist.load(family, data_dir, cache_dir)
    elif family == "cifar10":
        splits = cifar.load(data_dir, cache_dir)
    elif family == "celeba":
        splits = celeba.load(data_dir, cache_dir, seed=seed)
    elif family == "shapes":
        splits = shapes.load(seed)
    elif ref.path is None:
        raise DataError("imagefolder: name the folder, as in imagefolder:PATH")
    else:
        splits = imagefolder.load(ref.path, cache_dir, seed=seed)
    return split_train_val(ref.name, *splits, val_fraction=val_fraction, seed=seed)
