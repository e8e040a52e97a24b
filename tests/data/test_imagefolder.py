import numpy as np
import pytest
import torch

from regene_search.data import DataError, dataset_info, load_dataset
from regene_search.data.imagefolder import choose_preprocess
from tests.data.writers import one_line, write_class_folders, write_image


@pytest.mark.parametrize(
    ("size", "gray", "expected"),
    [((28, 28), True, (28, 1)), ((28, 28), False, (32, 3)), ((40, 50), True, (32, 1)), ((64, 80), False, (64, 3))],
)
def test_size_and_channels_rule(tmp_path, size, gray, expected):
    write_class_folders(tmp_path, ["a"], 2, size=size, gray=gray)
    pre = choose_preprocess(sorted(tmp_path.glob("a/*.png")))
    assert (pre.size, pre.channels) == expected


def test_one_colour_image_makes_it_rgb_and_one_small_image_makes_it_32(tmp_path):
    write_class_folders(tmp_path, ["a"], 2, size=(80, 80), gray=True)
    write_image(tmp_path / "a" / "small.jpg", np.zeros((40, 90, 3), np.uint8))
    pre = choose_preprocess(sorted(tmp_path.glob("a/*")))
    assert (pre.size, pre.channels) == (32, 3)


def test_single_folder_load_and_cache(tmp_path):
    write_class_folders(tmp_path / "pets", ["cat", "dog"], 10, size=(70, 70), gray=True, suffix=".jpg")
    cache = tmp_path / "cache"
    data = load_dataset(f"imagefolder:{tmp_path / 'pets'}", seed=3, val_fraction=0.25, cache_dir=cache)
    assert data.name == f"imagefolder:{tmp_path / 'pets'}" and data.classes == ("cat", "dog")
    assert data.train_x.shape == (12, 1, 64, 64) and len(data.val_x) == 4
    assert data.test_y.tolist().count(0) == data.test_y.tolist().count(1) == 2
    (entry,) = (cache / "decoded").glob("imagefolder-*.pt")
    again = load_dataset(f"imagefolder:{tmp_path / 'pets'}", seed=3, val_fraction=0.25, cache_dir=cache)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_x, data.test_x)
    assert list((cache / "decoded").iterdir()) == [entry]


def test_train_test_subfolders_and_info(tmp_path):
    write_class_folders(tmp_path / "train", ["x", "y", "z"], 3, size=(20, 30))
    write_class_folders(tmp_path / "test", ["x", "y", "z"], 1, size=(20, 30))
    data = load_dataset(f"imagefolder:{tmp_path}", cache_dir=tmp_path / "cache")
    assert data.test_x.shape == (3, 3, 32, 32) and data.test_y.tolist() == [0, 1, 2]
    info = dataset_info(f"imagefolder:{tmp_path}")
    assert info.name == f"imagefolder:{tmp_path}"
    assert (info.image_size, info.channels, info.classes) == (32, 3, ("x", "y", "z"))
    assert str(tmp_path) in info.looks_for and info.hflip is False


def test_missing_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", cache_dir=tmp_path / "cache")
    assert "folder not found" in one_line(err.value)
    with pytest.raises(DataError, match="imagefolder:PATH"):
        load_dataset("imagefolder", cache_dir=tmp_path / "cache")


def test_unreadable_image_is_named(tmp_path):
    write_class_folders(tmp_path, ["a", "b"], 2)
    (tmp_path / "b" / "0001.png").write_bytes(b"junk")
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{tmp_path}", cache_dir=tmp_path / "cache")
    assert one_line(err.value).startswith(f"{tmp_path / 'b' / '0001.png'}: unreadable image")
