"""`ImageData`: the labelled fraction of a semi-supervised run, and subsets that keep it."""

import pytest
import torch

from regene_search.data.dataset import ImageData, class_quotas
from tests.conftest import needs_mnist


def rows(images: torch.Tensor) -> set[bytes]:
    """Each image as bytes: a set compares image collections regardless of order."""
    return {bytes(x.flatten().tolist()) for x in images}


def imbalanced(counts: list[int]) -> ImageData:
    """Distinct images, `counts[c]` of class c in train; a few in val and test."""
    total = sum(counts) + 12
    x = torch.arange(total * 4, dtype=torch.int64).reshape(total, 1, 2, 2).remainder(251).to(torch.uint8)
    x[:, 0, 0, 0] = (torch.arange(total) % 256).to(torch.uint8)  # and distinct by their first pixel too
    x[:, 0, 0, 1] = (torch.arange(total) // 256).to(torch.uint8)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    train = len(y)
    held = torch.arange(12) % len(counts)
    return ImageData("toy", tuple(str(c) for c in range(len(counts))), x[:train], y, x[train : train + 6], held[:6], x[train + 6 :], held[6:])


@needs_mnist
def test_the_labelled_fraction_is_stratified_and_seeded(mnist_small):
    semi = mnist_small.with_labelled_fraction(0.1, seed=3)
    counts = torch.bincount(mnist_small.train_y, minlength=10)
    kept = torch.bincount(semi.train_y, minlength=10)
    share = counts.double() * 0.1
    assert ((kept == share.floor()) | (kept == share.ceil())).all()  # 10 % of every class, not just overall
    assert len(semi.train_x) == 500 and len(semi.train_x) + len(semi.unlabelled_x) == len(mnist_small.train_x)
    assert semi.labelled_fraction == 0.1
    again = mnist_small.with_labelled_fraction(0.1, seed=3)
    assert torch.equal(again.train_x, semi.train_x) and torch.equal(again.unlabelled_x, semi.unlabelled_x)
    other = mnist_small.with_labelled_fraction(0.1, seed=4)
    assert not torch.equal(other.train_x, semi.train_x)


@needs_mnist
def test_labelled_and_unlabelled_images_are_the_train_split_and_labels_stay_with_their_images(mnist_small):
    semi = mnist_small.with_labelled_fraction(0.25, seed=0)
    assert rows(semi.all_train_x) == rows(mnist_small.train_x) and len(semi.all_train_x) == len(mnist_small.train_x)
    assert not rows(semi.train_x) & rows(semi.unlabelled_x)
    label_of = {bytes(x.flatten().tolist()): int(y) for x, y in zip(mnist_small.train_x, mnist_small.train_y)}
    assert all(label_of[bytes(x.flatten().tolist())] == int(y) for x, y in zip(semi.train_x, semi.train_y))
    assert torch.equal(semi.all_train_x[: len(semi.train_x)], semi.train_x)  # labelled first


@needs_mnist
def test_validation_and_test_keep_every_image_and_label(mnist_small):
    semi = mnist_small.with_labelled_fraction(0.1, seed=0)
    for split in ("val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(semi, split), getattr(mnist_small, split)), split


def test_a_fraction_of_one_changes_nothing_and_a_full_dataset_has_no_unlabelled_images():
    data = imbalanced([5, 3, 2])
    assert data.unlabelled_x.shape == (0, 1, 2, 2) and data.unlabelled_x.dtype == torch.uint8
    assert data.all_train_x is data.train_x and data.labelled_fraction == 1.0
    assert data.with_labelled_fraction(1.0, seed=0) is data


def test_every_class_keeps_a_labelled_image_however_small_the_fraction():
    semi = imbalanced([40, 7, 2]).with_labelled_fraction(0.1, seed=0)
    assert torch.bincount(semi.train_y, minlength=3).tolist() == [4, 1, 1]
    assert len(semi.unlabelled_x) == 36 + 6 + 1


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_a_fraction_outside_zero_to_one_is_rejected(fraction):
    with pytest.raises(ValueError, match="labelled fraction must be in"):
        imbalanced([5, 5]).with_labelled_fraction(fraction, seed=0)


def test_unlabelled_images_must_match_the_train_images():
    data = imbalanced([4, 4])
    with pytest.raises(ValueError, match="unlabelled_x must be uint8"):
        ImageData(data.name, data.classes, data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y, torch.zeros(3, 1, 3, 3, dtype=torch.uint8))


def test_a_subset_cuts_the_unlabelled_images_in_proportion():
    semi = imbalanced([60, 60, 80]).with_labelled_fraction(0.25, seed=0)
    assert (len(semi.train_x), len(semi.unlabelled_x)) == (50, 150)
    part = semi.subset(train=20, seed=1)
    assert (len(part.train_x), len(part.unlabelled_x)) == (20, 60)
    assert rows(part.unlabelled_x) <= rows(semi.unlabelled_x) and rows(part.train_x) <= rows(semi.train_x)
    assert semi.subset(val=2, seed=1).unlabelled_x is semi.unlabelled_x  # the train split kept whole


@pytest.mark.parametrize("total", [3, 5, 10, 17, 29])
def test_class_quotas_share_the_total_by_largest_remainders(total):
    counts = torch.tensor([13, 9, 5, 3])
    quotas = class_quotas(counts, total)
    exact = counts.double() * total / counts.sum()
    assert total <= int(quotas.sum()) <= total + int((exact < 1).sum())  # more only where a class is lifted to one
    assert ((quotas >= 1) & (quotas <= counts)).all()
    if total >= 8:  # no class lifted to its minimum of one: the shares are floors or ceilings of the exact ones
        assert int(quotas.sum()) == total and ((quotas == exact.floor()) | (quotas == exact.ceil())).all()


def test_class_quotas_known_values():
    assert class_quotas(torch.tensor([5, 3, 2]), 5).tolist() == [3, 1, 1]  # 2.5, 1.5, 1.0: the first remainder wins the tie
    assert class_quotas(torch.tensor([40, 7, 2]), 5).tolist() == [4, 1, 1]  # 4.08, 0.71, 0.29, and the last class lifted to one
