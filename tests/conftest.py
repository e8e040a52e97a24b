"""Shared fixtures: the real MNIST copy in ../shared/data, and a Ray instance that tests own."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mnist_available() -> bool:
    return (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


needs_mnist = pytest.mark.skipif(not mnist_available(), reason=f"real MNIST copy not found at {SHARED_DATA}")


@pytest.fixture(scope="session")
def mnist_small():
    """A seeded 5k/1k/1k subset of the real MNIST copy."""
    if not mnist_available():
        pytest.skip(f"real MNIST copy not found at {SHARED_DATA}")
    from regene_search.data import load_dataset

    return load_dataset("mnist", SHARED_DATA, seed=0).subset(train=5000, val=1000, test=1000, seed=0)


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture
def ray_instance(monkeypatch):
    """An in-process Ray with its own short temp dir; shut down after the test."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    try:
        yield temp_dir
    finally:
        ray.shutdown()
