import numpy as np
import pytest
import torch

from regene_search.data import folders
from regene_search.data.folders import Preprocess, decode_images, list_class_folders, load_folder_splits
from regene_search.errors import DataError
from tests.data.writers import one_line, write_class_folders, write_image


def test_listing_follows_imagefolder_order(tmp_path):
    write_class_folders(tmp_path, ["b", "a"], 2)
    write_image(tmp_path / "a" / "nested" / "0000.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("a", "b")
    assert [p.relative_to(tmp_path).as_posix() for p in listing.items] == [
        "a/0000.png", "a/0001.png", "a/nested/0000.png", "b/0000.png", "b/0001.png"
    ]
    assert listing.labels.tolist() == [0, 0, 0, 1, 1] and listing.labels.dtype == torch.int64


def test_empty_class_folders_are_named(tmp_path):
    write_class_folders(tmp_path, ["cat"], 1)
    (tmp_path / "dog").mkdir()
    (tmp_path / "eel").mkdir()
    with pytest.raises(DataError) as err:
        list_class_folders(tmp_path)
    assert one_line(err.value).startswith(f"{tmp_path}: empty class folders dog, eel")


def test_missing_folder_and_no_class_folders(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        list_class_folders(tmp_path / "missing")
    write_image(tmp_path / "loose.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="no class folders"):
        list_class_folders(tmp_path)


def test_decoding_converts_and_resizes(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, 10:50] = (200, 100, 50)  # the centre 40x40 square, what a centre crop keeps
    gray16 = np.full((32, 32), 40000, np.uint16)
    sources = [
        write_image(tmp_path / "wide.png", rgb),
        write_image(tmp_path / "gray.bmp", np.full((32, 32), 77, np.uint8)),
        write_image(tmp_path / "deep.png", gray16),
    ]
    x = decode_images(sources, Preprocess(size=32, channels=3))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    assert x[0, :, 2:-2, 2:-2].flatten(1).unique(dim=1).tolist() == [[200], [100], [50]]
    assert (x[1] == 77).all()
    assert (x[2] == 40000 >> 8).all()
    gray = decode_images(sources[:1], Preprocess(size=16, channels=1))
    assert gray.shape == (1, 1, 16, 16)


def test_bytes_sources_decode_like_files(tmp_path):
    path = write_image(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    pre = Preprocess(size=32, channels=3)
    assert torch.equal(decode_images([path], pre), decode_images([("x", path.read_bytes())], pre))


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as err:
        decode_images([bad], Preprocess(size=32, channels=3))
    assert one_line(err.value).startswith(f"{bad}: unreadable image")


def test_truncated_jpeg(tmp_path):
    path = write_image(tmp_path / "x.jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DataError, match="unreadable image"):
        decode_images([path], Preprocess(size=32, channels=3))


def test_worker_processes_give_the_same_result(tmp_path, monkeypatch):
    write_class_folders(tmp_path, ["a", "b"], 6)
    paths = list_class_folders(tmp_path).items
    pre = Preprocess(size=16, channels=3)
    serial = decode_images(paths, pre)
    monkeypatch.setattr(folders, "CHUNK", 4)  # 3 chunks over 2 forked workers
    torch.set_num_threads(2)
    assert torch.equal(decode_images(paths, pre), serial)
    (tmp_path / "b" / "0005.png").write_bytes(b"junk")
    with pytest.raises(DataError) as err:  # raised in a worker, arrives as the same one-liner
        decode_images(paths, pre)
    assert one_line(err.value).startswith(f"{tmp_path / 'b' / '0005.png'}: unreadable image")


def _load(root, cache_dir, seed=0):
    pre = Preprocess(size=8, channels=3)
    return load_folder_splits(root, tag="t", choose=lambda _: pre, recipe=pre.recipe, cache_dir=cache_dir, seed=seed)


def test_single_folder_is_split_by_seed_and_class(tmp_path):
    write_class_folders(tmp_path / "data", ["a", "b", "c"], 10)
    splits = _load(tmp_path / "data", tmp_path / "cache")
    assert torch.bincount(splits.test_y).tolist() == [2, 2, 2]
    assert torch.bincount(splits.train_y).tolist() == [8, 8, 8]
    again, other = _load(tmp_path / "data", tmp_path / "cache"), _load(tmp_path / "data", tmp_path / "cache", seed=1)
    assert torch.equal(again.test_x, splits.test_x)
    assert not torch.equal(other.test_x, splits.test_x)


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    write_class_folders(tmp_path / "train", ["a", "b"], 3)
    write_class_folders(tmp_path / "test", ["a", "b"], 1)
    splits = _load(tmp_path, tmp_path / "cache")
    assert splits.classes == ("a", "b") and len(splits.train_x) == 6 and splits.test_y.tolist() == [0, 1]
    write_class_folders(tmp_path / "test", ["c"], 1)
    with pytest.raises(DataError, match="do not match"):
        _load(tmp_path, tmp_path / "cache")


def test_walk_survives_symlink_loops_and_lists_each_folder_once(tmp_path):
    write_class_folders(tmp_path, ["a", "b"], 2)
    (tmp_path / "a" / "up").symlink_to(tmp_path)  # to an ancestor: os.walk alone never ends; b's images would be a's
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a")  # a loop inside one class
    (tmp_path / "b" / "elsewhere").symlink_to(tmp_path / "a", target_is_directory=True)
    listing = list_class_folders(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listing.items] == [
        "a/0000.png", "a/0001.png", "b/0000.png", "b/0001.png", "b/elsewhere/0000.png", "b/elsewhere/0001.png"
    ]


@pytest.mark.parametrize("side", [10_000, 14_000])  # under twice PIL's limit it only warns; over, it raises
def test_decompression_bombs_are_refused_before_decoding(tmp_path, side):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # a few KB on disk
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError) as err:
        decode_images([path], Preprocess(size=32, channels=1))
    assert "megapixel limit (a decompression bomb?)" in one_line(err.value)
    with pytest.raises(DataError, match="megapixel limit"):
        decode_images([("in-a-tarball/bomb.png", path.read_bytes())], Preprocess(size=32, channels=1))


def test_one_class_folder_is_refused(tmp_path):
    write_class_folders(tmp_path, ["only"], 2)
    with pytest.raises(DataError, match="one class folder"):
        list_class_folders(tmp_path)
