"""`ImageData` in the form Ray's object store shares between the workers of a node.

A torch tensor put in the object store is pickled into bytes, and every worker that gets it
rebuilds a private copy (CelebA at 64 px: 2.4 GB per trial worker). A numpy array is stored out of
band, and `ray.get` returns a read-only view of the node's shared memory instead: one copy per node
however many trials run there (`benchmarks/data_memory.py`). `to_arrays` before `ray.put` (or
`tune.with_parameters`), `from_arrays` in the worker; tensors rebuilt with `torch.from_numpy` share
that memory, so nothing may write into them in place (`trial.py` only reads the images: indexing and
`to_float` make new tensors).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .dataset import ImageData


def to_arrays(data: ImageData) -> dict[str, Any]:
    """Every field of `data` by name, its tensors as contiguous numpy arrays sharing their memory
    (contiguous: Ray stores only those out of band); other fields (name, classes, None) as they are."""
    return {
        field.name: np.ascontiguousarray(value.numpy()) if isinstance(value, torch.Tensor) else value
        for field in dataclasses.fields(ImageData)
        for value in [getattr(data, field.name)]
    }


def from_arrays(arrays: Mapping[str, Any]) -> ImageData:
    """The `ImageData` of `to_arrays`, its tensors views of the arrays (no copy).

    The object store's arrays are read-only and torch has no read-only tensors, so `from_numpy`
    warns that writing would be undefined; the warning is silenced on purpose: the trial code
    never writes into the dataset (tests/data/test_shared.py checks a trial leaves it unchanged).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return ImageData(
            **{
                field.name: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
                for field in dataclasses.fields(ImageData)
                if field.name in arrays
                for value in [arrays[field.name]]
            }
        )


def shared_mapping(tensor: torch.Tensor) -> str | None:
    """The shared file mapping of this process that holds all of `tensor`'s bytes, as
    "DEVICE INODE PATH" from /proc/self/maps (Linux); None if they lie in private memory.

    A diagnostic for tests and benchmarks: a tensor from `from_arrays` in a Ray worker lies in the
    object store's file (`/dev/shm/plasma...`), the same DEVICE INODE in every worker of the node.
    """
    start = tensor.data_ptr()
    end = start + tensor.nbytes
    with open("/proc/self/maps") as maps:
        for line in maps:
            address, perms, _offset, device, inode, *path = line.split(maxsplit=5)
            low, high = (int(v, 16) for v in address.split("-"))
            if low <= start < high:
                shared = perms.endswith("s") and inode != "0" and end <= high
                return f"{device} {inode} {path[0].strip() if path else ''}" if shared else None
    return None
