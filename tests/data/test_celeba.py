import numpy as np
import pytest
import torch

from regene_search.data import DataError, load_dataset
from tests.data.writers import one_line, write_class_folders, write_image

ATTRIBUTES = ["5_o_Clock_Shadow", "Bald", "Male", "Young"]


def _face(value: int) -> np.ndarray:
    """A 218x178 aligned-CelebA-sized image: `value` in the centre 140x140, 255 around it."""
    img = np.full((218, 178, 3), 255, np.uint8)
    img[39:179, 19:159] = value
    return img


def _write_aligned(base, n=10, partition=True):
    males = [i % 2 for i in range(n)]
    lines = [str(n), " ".join(ATTRIBUTES)]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        write_image(base / "img_align_celeba" / name, _face(20 * i))
        lines.append(f"{name} -1 -1 {'1' if males[i] else '-1'}  1")
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        parts = ["0"] * (n - 3) + ["1", "2", "2"]
        (base / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts)))
    return males


def test_aligned_layout_crops_resizes_and_labels(tmp_path):
    males = _write_aligned(tmp_path / "celeba")
    data = load_dataset("celeba", tmp_path, val_fraction=0.25, cache_dir=tmp_path / "cache")
    assert data.classes == ("female", "male")
    assert data.train_x.shape == (6, 3, 64, 64) and len(data.val_x) == 2 and data.train_x.dtype == torch.uint8
    assert data.test_y.tolist() == males[-2:]
    # The 140 px centre crop removes the white border entirely; JPEG keeps flat areas nearly flat.
    expected = torch.tensor([160, 180]).view(2, 1, 1, 1)
    assert (data.test_x.int() - expected).abs().max() <= 3
    assert (tmp_path / "cache" / "decoded").is_dir()


def test_without_partition_file_a_seeded_fifth_is_test(tmp_path):
    _write_aligned(tmp_path, n=10, partition=False)
    data = load_dataset("celeba", tmp_path, cache_dir=tmp_path / "cache")
    assert len(data.test_x) == 2 and data.test_y.tolist().count(1) == 1


def test_class_folders(tmp_path):
    write_class_folders(tmp_path / "faces", ["celeba", "anime"], 5, size=(100, 100), suffix=".jpg")
    data = load_dataset("celeba", tmp_path / "faces", cache_dir=tmp_path / "cache")
    assert data.classes == ("anime", "celeba") and data.test_x.shape == (2, 3, 64, 64)


def test_missing_attribute_file(tmp_path):
    write_image(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", _face(0))
    with pytest.raises(DataError) as err:
        load_dataset("celeba", tmp_path, cache_dir=tmp_path / "cache")
    assert "list_attr_celeba.txt: not found" in one_line(err.value)


def test_malformed_attribute_line(tmp_path):
    _write_aligned(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text(attr.read_text() + "000011.jpg 1 1\n")
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:13: malformed line"):
        load_dataset("celeba", tmp_path, cache_dir=tmp_path / "cache")


def test_listed_image_missing(tmp_path):
    _write_aligned(tmp_path)
    (tmp_path / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DataError, match="000004.jpg: cannot read"):
        load_dataset("celeba", tmp_path, cache_dir=tmp_path / "cache")


def test_no_data(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("celeba", None, cache_dir=tmp_path)
    assert "--data-dir" in one_line(err.value)
    with pytest.raises(DataError, match="celeba: no data in"):
        load_dataset("celeba", tmp_path, cache_dir=tmp_path / "cache")
