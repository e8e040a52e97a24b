import torch

from regene_search.data import load_dataset
from regene_search.data.shapes import CLASSES, generate


def test_deterministic_for_a_seed_and_different_across_seeds():
    x, y = generate(200, seed=5)
    x2, y2 = generate(200, seed=5)
    x3, y3 = generate(200, seed=6)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3) and not torch.equal(y, y3)


def test_shapes_are_drawn_bright_on_dark():
    x, _ = generate(100, seed=0)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8
    brightness = x.float().mean(1).flatten(1)
    # Every image has both shape pixels (>= 108 per channel) and background (<= 92).
    assert (brightness.max(1).values >= 108).all() and (brightness.min(1).values <= 92).all()


def test_load_dataset_sizes_and_balance():
    data = load_dataset("shapes", seed=1, val_fraction=0.1)
    assert data.classes == CLASSES
    assert len(data.train_x) + len(data.val_x) == 6000 and data.test_x.shape == (1000, 3, 32, 32)
    assert torch.bincount(torch.cat([data.train_y, data.val_y])).tolist() == [1500] * 4
    assert torch.bincount(data.test_y).tolist() == [250] * 4
    assert data.train_y.dtype == torch.int64
