"""Datasets: a registry of named loaders returning in-memory uint8 `ImageData`.

    from regene_search.data import load_dataset
    data = load_dataset("cifar10", "../shared/data", seed=0)
"""

from regene_search.data.dataset import ImageData
from regene_search.errors import DataError

__all__ = ["DataError", "DatasetInfo", "ImageData", "dataset_info", "list_datasets", "load_dataset"]
_REGISTRY = {"DatasetInfo", "dataset_info", "list_datasets", "load_dataset"}


def __getattr__(name: str):
    # The loaders import torchvision (~3.6 s); Ray trial workers need only ImageData, so the
    # registry is imported on first use.
    if name in _REGISTRY:
        from regene_search.data import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'regene_search.data' has no attribute {name!r}")
