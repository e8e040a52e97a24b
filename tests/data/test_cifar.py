import pickle

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from regene_search.data import DataError, load_dataset
from tests.data.writers import CIFAR_CLASSES, make_tarball, one_line, write_cifar_pickles, write_class_folders


def _folders(root, per_class=2, suffix=".png"):
    """train/ and test/ class folders; returns the test images in loader order."""
    write_class_folders(root / "train", CIFAR_CLASSES, per_class, suffix=suffix, seed=1)
    test = write_class_folders(root / "test", CIFAR_CLASSES, 1, suffix=suffix, seed=2)
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for name in CIFAR_CLASSES for a in test[name]])


def test_pickle_batches(tmp_path):
    batches = write_cifar_pickles(tmp_path / "cifar-10-batches-py", per_batch=4)
    data = load_dataset("cifar10", tmp_path, val_fraction=0.25, cache_dir=tmp_path / "cache")
    assert data.classes == CIFAR_CLASSES
    assert data.train_x.shape == (15, 3, 32, 32) and data.val_x.shape == (5, 3, 32, 32)
    test = batches["test_batch"]
    # Rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(data.test_x, torch.from_numpy(test["data"]).view(4, 3, 32, 32))
    assert data.test_y.tolist() == test["labels"] and data.test_y.dtype == torch.int64


def test_pickle_folder_given_directly(tmp_path):
    write_cifar_pickles(tmp_path, per_batch=2)
    assert len(load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache").test_x) == 2


def test_corrupt_pickle(tmp_path):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert one_line(err.value).startswith(f"{bad}: corrupt CIFAR-10 file")


def test_pickle_with_wrong_shape(tmp_path):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}))
    with pytest.raises(DataError, match="rows of 3072 pixels"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")


def test_missing_batch(tmp_path):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch: file not found"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("sub", ["", "cifar10"])
def test_image_folders(tmp_path, sub):
    test_x = _folders(tmp_path / "data" / sub)
    data = load_dataset("cifar10", tmp_path / "data", val_fraction=0.1, cache_dir=tmp_path / "cache")
    assert data.classes == CIFAR_CLASSES
    assert len(data.train_x) + len(data.val_x) == 20 and data.train_x.shape[1:] == (3, 32, 32)
    assert torch.equal(data.test_x, test_x)  # PNG is lossless: exact pixels
    assert data.test_y.tolist() == list(range(10))


def test_jpeg_folders_decode_close_to_source(tmp_path):
    test_x = _folders(tmp_path, suffix=".jpg")
    data = load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert data.test_x.shape == (10, 3, 32, 32)
    # Random noise is JPEG's worst case; the mean still survives.
    assert abs(data.test_x.float().mean() - test_x.float().mean()) < 3


def test_class_folders_must_be_cifar_classes(tmp_path):
    write_class_folders(tmp_path / "train", ["cat", "dog"], 1)
    write_class_folders(tmp_path / "test", ["cat", "dog"], 1)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert "do not match" in one_line(err.value) and "airplane" in str(err.value)


def test_tarball_is_read_without_touching_the_data_dir_and_cached(tmp_path):
    test_x = _folders(tmp_path / "src")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_tarball(tmp_path / "src", data_dir / "cifar10-jpg.tar.gz")
    cache = tmp_path / "cache"
    first = load_dataset("cifar10", data_dir, cache_dir=cache)
    assert torch.equal(first.test_x, test_x) and first.test_y.tolist() == list(range(10))
    assert [p.name for p in data_dir.iterdir()] == ["cifar10-jpg.tar.gz"]
    cached = list((cache / "decoded").glob("cifar10-*.pt"))
    assert len(cached) == 1
    second = load_dataset("cifar10", data_dir, cache_dir=cache)
    for split in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, split), getattr(second, split))
    assert list((cache / "decoded").glob("cifar10-*.pt")) == cached
    # Same pixels as reading the folders themselves.
    folders = load_dataset("cifar10", tmp_path / "src", cache_dir=cache)
    assert torch.equal(folders.train_x, first.train_x)


def test_tarball_given_as_data_dir(tmp_path):
    _folders(tmp_path / "src", per_class=1)
    tarball = make_tarball(tmp_path / "src", tmp_path / "anything.tar.gz")
    assert len(load_dataset("cifar10", tarball, cache_dir=tmp_path / "cache").test_x) == 10


def test_corrupt_tarball(tmp_path):
    (tmp_path / "cifar10-jpg.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 definitely not gzip")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert "cannot read tarball" in one_line(err.value)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert one_line(err.value).startswith(f"cifar10: no data in {tmp_path}; expected")


def test_no_data_dir_and_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", None, cache_dir=tmp_path)
    assert "download failed" in one_line(err.value) and "--data-dir" in str(err.value)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])  # 2: the official files' protocol
def test_pickled_batches_load_arrays_only(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar_pickles(folder, per_batch=2)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps({**batch, "data": batch["data"], "mean": np.float64(0.5)}, protocol=protocol))
    assert len(load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache").test_x) == 2
    marker = tmp_path / "code-ran"
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": _RunsCode(marker)}, protocol=protocol))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache2")
    assert "refers to posix.system, which a CIFAR-10 batch never holds" in one_line(err.value)
    assert not marker.exists()
