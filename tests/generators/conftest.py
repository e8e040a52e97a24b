"""Fixtures of the generator tests: one torch thread, and the stage tests' real MNIST subset and encoder."""

from __future__ import annotations

import pytest
import torch

from ..stages.conftest import encoder_checkpoint, mnist_2k  # noqa: F401  (fixtures shared with the stage tests)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matrices: two torch threads on two busy cores run up to 100x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
