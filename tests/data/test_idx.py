import numpy as np
import pytest

from regene_search.data.idx import IMAGES_MAGIC, LABELS_MAGIC, check_idx
from regene_search.errors import DataError
from tests.data.writers import one_line, write_idx


def test_valid_files_give_their_shape(tmp_path):
    images = write_idx(tmp_path / "images", np.zeros((5, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    assert check_idx(images, IMAGES_MAGIC) == (5, 28, 28)
    assert check_idx(labels, LABELS_MAGIC) == (5,)


def test_truncated_file(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        check_idx(path, IMAGES_MAGIC)
    assert "truncated IDX file" in one_line(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x05"])
def test_truncated_header(tmp_path, content):
    path = tmp_path / "images"
    path.write_bytes(content)
    with pytest.raises(DataError, match="truncated IDX file"):
        check_idx(path, IMAGES_MAGIC)


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        check_idx(path, LABELS_MAGIC)


def test_wrong_magic_number(tmp_path):
    labels = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DataError) as err:
        check_idx(labels, IMAGES_MAGIC)  # a label file where images are expected
    assert "magic number 2049, expected 2051" in one_line(err.value)


def test_missing_file_mentions_gzip_copy(tmp_path):
    (tmp_path / "images.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        check_idx(tmp_path / "images", IMAGES_MAGIC)
    assert "not found" in one_line(err.value) and "gunzip" in str(err.value)
