
import pytest
import torch
from torchvision.datasets import MNIST

from regene_search.data import DataError, load_dataset
from tests.conftest import SHARED_DATA, needs_mnist
from tests.data.writers import one_line, write_idx, write_mnist



def test_loads_raw_idx_layout(tmp_path):
    written = write_mnist(tmp_path, n_train=30, n_test=10)
    data = load_dataset("mnist", tmp_path, val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert data.name == "mnist" and data.classes == tuple(MNIST.classes)
    assert data.train_x.shape == (24, 1, 28, 28) and data.val_x.shape == (6, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(written["test_x"]))
    assert torch.equal(data.test_y, torch.from_numpy(written["test_y"]).long())
    # Train + val is a permutation of the written train set.
    pooled = torch.cat([data.train_x, data.val_x])[:, 0].flatten(1)
    expected = torch.from_numpy(written["train_x"]).flatten(1)
    assert sorted(map(tuple, pooled.tolist())) == sorted(map(tuple, expected.tolist()))


def test_fashion_mnist_folder(tmp_path):
    write_mnist(tmp_path, folder="FashionMNIST")
    data = load_dataset("fashion-mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert data.classes[0] == "T-shirt/top" and data.num_classes == 10
    with pytest.raises(DataError, match="MNIST/raw not found"):
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("sub", ["", "MNIST", "MNIST/raw"])
def test_data_dir_may_point_inside_the_layout(tmp_path, sub):
    write_mnist(tmp_path)
    data = load_dataset("mnist", tmp_path / sub, cache_dir=tmp_path / "cache")
    assert len(data.test_x) == 10


def test_truncated_file_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert one_line(err.value).startswith(f"{path}: truncated IDX file")


def test_missing_test_file_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert one_line(err.value) == f"{path}: file not found"


def test_swapped_files_fail_on_magic(tmp_path):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    images_bytes = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(images_bytes)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")


def test_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path, n_train=30)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", torch.zeros(29, dtype=torch.uint8).numpy())
    with pytest.raises(DataError, match="30 images but train-labels-idx1-ubyte has 29 labels"):
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")


def test_labels_out_of_range(tmp_path):
    write_mnist(tmp_path, n_test=10)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", torch.full((10,), 12, dtype=torch.uint8).numpy())
    with pytest.raises(DataError, match="label 12 out of range"):
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert "nowhere not found" in one_line(err.value)


def test_no_data_dir_and_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once, network or not
    with pytest.raises(DataError) as err:
        load_dataset("mnist", None, cache_dir=tmp_path)
    message = one_line(err.value)
    assert "download failed" in message and "--data-dir" in message and str(tmp_path) in message


def test_no_data_dir_uses_an_earlier_download(tmp_path):
    write_mnist(tmp_path / "data")
    assert len(load_dataset("mnist", None, cache_dir=tmp_path).test_x) == 10


@needs_mnist
def test_real_mnist_copy(tmp_path):
    data = load_dataset("mnist", SHARED_DATA, seed=0, cache_dir=tmp_path)
    assert data.train_x.shape[1:] == (1, 28, 28) and data.train_x.dtype == torch.uint8
    assert len(data.train_x) + len(data.val_x) == 60000 and len(data.val_x) == 6000
    assert data.test_x.shape == (10000, 1, 28, 28)
    for y in (data.train_y, data.val_y, data.test_y):
        assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    assert not any(tmp_path.iterdir())  # IDX files need no cache
