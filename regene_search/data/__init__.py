"""Datasets: a registry of named loaders returning in-memory uint8 `ImageData`.

    from regene_search.data import load_dataset
    data = load_dataset("cifar10", "../shared/data", seed=0)
"""

from regene_search.data.dataset import ImageData
from regene_search.data.registry import DatasetInfo, dataset_info, list_datasets, load_dataset
from regene_search.errors import DataError

__all__ = ["DataError", "DatasetInfo", "ImageData", "dataset_info", "list_datasets", "load_dataset"]
