import pytest

from regene_search.data.tarball import read_splits
from regene_search.errors import DataError
from tests.data.writers import make_tarball, one_line, write_class_folders


def test_members_under_one_top_folder(tmp_path):
    write_class_folders(tmp_path / "src" / "cifar" / "train", ["a", "b"], 2)
    write_class_folders(tmp_path / "src" / "cifar" / "test", ["a", "b"], 1)
    (tmp_path / "src" / "cifar" / "README.md").write_text("ignored")
    train, test = read_splits(make_tarball(tmp_path / "src", tmp_path / "x.tgz"), ["a", "b"])
    assert [name.split(":")[-1] for name, _ in train.items] == [
        "cifar/train/a/0000.png", "cifar/train/a/0001.png", "cifar/train/b/0000.png", "cifar/train/b/0001.png"
    ]
    assert train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0, 1]
    assert all(data.startswith(b"\x89PNG") for _, data in train.items)


def test_unexpected_class_and_missing_split(tmp_path):
    write_class_folders(tmp_path / "one" / "train", ["a", "zebra"], 1)
    write_class_folders(tmp_path / "one" / "test", ["a"], 1)
    with pytest.raises(DataError) as err:
        read_splits(make_tarball(tmp_path / "one", tmp_path / "one.tgz"), ["a"])
    assert "unexpected class folder train/zebra" in one_line(err.value)
    write_class_folders(tmp_path / "two" / "train", ["a"], 1)
    with pytest.raises(DataError, match="no test/<class>/<image> files inside"):
        read_splits(make_tarball(tmp_path / "two", tmp_path / "two.tgz"), ["a"])
    write_class_folders(tmp_path / "three" / "train", ["a", "b", "c"], 1)
    write_class_folders(tmp_path / "three" / "test", ["b"], 1)
    with pytest.raises(DataError, match="empty class folders test/a, test/c$"):
        read_splits(make_tarball(tmp_path / "three", tmp_path / "three.tgz"), ["a", "b", "c"])
