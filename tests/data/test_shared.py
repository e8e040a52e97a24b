"""data/shared.py: the dataset as numpy arrays through Ray's object store, mapped by the workers of a node, not copied."""

import dataclasses

import numpy as np
import ray
import torch

from regene_search.config import ProbeConfig, TrialConfig
from regene_search.data.dataset import ImageData
from regene_search.data.shared import from_arrays, shared_mapping, to_arrays
from regene_search.trial import TrialSetup, run_trial



def tensor_fields(data: ImageData) -> list[str]:
    return [f.name for f in dataclasses.fields(data) if isinstance(getattr(data, f.name), torch.Tensor)]


def labelled_share(data: ImageData) -> ImageData:
    """`data` with a third of its training images unlabelled, so every tensor field is non-empty."""
    n = len(data.train_x) // 3
    return dataclasses.replace(data, train_x=data.train_x[n:], train_y=data.train_y[n:], unlabelled_x=data.train_x[:n])


def test_round_trip_keeps_every_field_and_shares_the_tensors_memory(mnist_small):
    data = labelled_share(mnist_small)
    arrays = to_arrays(data)
    assert set(arrays) == {f.name for f in dataclasses.fields(ImageData)}
    back = from_arrays(arrays)
    for field in dataclasses.fields(ImageData):
        before, after = getattr(data, field.name), getattr(back, field.name)
        if isinstance(before, torch.Tensor):
            assert isinstance(arrays[field.name], np.ndarray) and arrays[field.name].flags.c_contiguous
            assert after.dtype == before.dtype and torch.equal(after, before), field.name
            assert after.data_ptr() == before.data_ptr(), f"{field.name} was copied"
        else:
            assert after == before, field.name


@ray.remote(num_cpus=1)
def held_in(boxed_ref, path: str) -> dict[str, str | None]:
    """A worker's view of the dataset as a trial gets it (`ray.get` of the `with_parameters`
    reference): the shared mapping holding each tensor, None where the worker has a private copy."""
    got = ray.get(boxed_ref[0])
    data = from_arrays(got) if path == "numpy" else got
    return {name: shared_mapping(getattr(data, name)) for name in tensor_fields(data)}


@ray.remote(num_cpus=1)
def train_on(boxed_ref) -> bool:
    """One real trial (augmentation on) on the mapped dataset; True if the dataset is unchanged after it."""
    data = from_arrays(ray.get(boxed_ref[0]))
    before = {name: getattr(data, name).clone() for name in tensor_fields(data)}
    config = TrialConfig(epochs=1, blocks=2, base_width=8, latent_dim=16, batch_size=64, augment=True)
    run_trial(data, config, TrialSetup(probe=ProbeConfig(train_images=64, val_images=64, steps=2, batch_size=32), hflip=True))
    return all(torch.equal(getattr(data, name), before[name]) for name in before)


def test_ray_workers_map_one_copy_of_the_dataset_from_the_object_store(mnist_small, ray_instance):
    data = labelled_share(mnist_small.subset(train=3000, val=500, test=500))
    shared_ref, torch_ref = ray.put(to_arrays(data)), ray.put(data)

    # Two workers at once (2 CPUs): each finds every tensor inside the object store's shared file,
    # the same file in both, i.e. one copy on the node.
    first, second = ray.get([held_in.remote([shared_ref], "numpy"), held_in.remote([shared_ref], "numpy")])
    assert first == second
    assert all(place is not None and "plasma" in place for place in first.values()), first
    # The check can fail: torch tensors through the object store are rebuilt in private memory.
    assert all(place is None for place in ray.get(held_in.remote([torch_ref], "torch")).values())

    assert ray.get(train_on.remote([shared_ref]))
    for name, array in ray.get(shared_ref).items():  # and the node's copy itself is untouched
        if isinstance(array, np.ndarray):
            assert np.array_equal(array, getattr(data, name).numpy()), name
