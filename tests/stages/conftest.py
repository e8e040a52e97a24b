"""Fixtures of the decoder/generate/evaluate tests: a 2k-image MNIST subset and a briefly trained encoder."""

from __future__ import annotations

import pytest
import torch

from regene_search.config import ProbeConfig, TrialConfig
from regene_search.data.dataset import ImageData, split_train_val
from regene_search.trial import TrialSetup, run_trial

from ..conftest import SHARED_DATA, require_mnist

# Small enough to train in seconds on two CPU cores, good enough to classify digits (~0.9).
TINY_ENCODER = TrialConfig(blocks=2, base_width=16, latent_dim=64, epochs=2, batch_size=64, augment=False)
TINY_PROBE = ProbeConfig(train_images=128, val_images=64, steps=2)


@pytest.fixture(scope="session")
def mnist_2k() -> ImageData:
    """2000 train / 500 val / 1000 test images of the real MNIST copy, read with torchvision."""
    require_mnist()
    import torchvision

    train = torchvision.datasets.MNIST(str(SHARED_DATA), train=True, download=False)
    test = torchvision.datasets.MNIST(str(SHARED_DATA), train=False, download=False)
    data = split_train_val(
        "mnist", tuple(str(i) for i in range(10)), train.data[:, None], train.targets, test.data[:, None], test.targets, val_fraction=0.1, seed=0
    )
    return data.subset(train=2000, val=500, test=1000, seed=0)


@pytest.fixture(scope="session")
def encoder_checkpoint(mnist_2k) -> dict:
    """The checkpoint dict of a classifier trained briefly, as the search stage would save it."""
    saved = {}
    run_trial(mnist_2k, TINY_ENCODER, TrialSetup(probe=TINY_PROBE), on_epoch=lambda metrics, make: saved.update(state=make(), metrics=metrics))
    assert saved["metrics"]["accuracy"] > 0.8
    return saved["state"]


@pytest.fixture
def cpu_threads():
    """One torch thread: two threads on two shared cores contend badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
