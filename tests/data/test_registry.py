import pytest

import regene_search.data as data_api
from regene_search import errors
from regene_search.data import DataError, DatasetInfo, ImageData, dataset_info, list_datasets, load_dataset
from tests.data.writers import one_line, write_mnist

NAMES = ["mnist", "fashion-mnist", "cifar10", "celeba", "shapes", "imagefolder"]


def test_public_api():
    assert DataError is errors.DataError and issubclass(DataError, errors.UserError)
    exported = {"DataError", "DatasetInfo", "ImageData", "dataset_info", "list_datasets", "load_dataset"}
    assert set(data_api.__all__) == exported
    assert ImageData.__module__ == "regene_search.data.dataset"


def test_list_datasets():
    infos = list_datasets()
    assert [i.name for i in infos] == NAMES
    assert all(isinstance(i, DatasetInfo) and i.looks_for for i in infos)
    by_name = {i.name: i for i in infos}
    assert (by_name["mnist"].image_size, by_name["mnist"].channels, by_name["mnist"].hflip) == (28, 1, False)
    assert (by_name["cifar10"].image_size, by_name["cifar10"].channels, by_name["cifar10"].hflip) == (32, 3, True)
    assert by_name["cifar10"].classes[:3] == ("airplane", "automobile", "bird")
    assert (by_name["celeba"].image_size, by_name["celeba"].classes) == (64, None)
    assert (by_name["imagefolder"].image_size, by_name["imagefolder"].classes) == (0, None)


@pytest.mark.parametrize("name", NAMES)
def test_dataset_info_matches_the_list(name):
    assert dataset_info(name) == {i.name: i for i in list_datasets()}[name]


@pytest.mark.parametrize("name", ["cifar100", "MNIST", "imagefolder:", ""])
def test_unknown_names(name):
    for call in (dataset_info, load_dataset):
        with pytest.raises(DataError) as err:
            call(name)
        message = one_line(err.value)
        assert message.startswith(f"unknown dataset '{name}'; choose from: mnist, fashion-mnist")
        assert message.endswith("imagefolder:PATH")


def test_validation_split_follows_fraction_and_seed(tmp_path):
    write_mnist(tmp_path, n_train=50)
    a = load_dataset("mnist", tmp_path, seed=0, val_fraction=0.2, cache_dir=tmp_path / "cache")
    b = load_dataset("mnist", tmp_path, seed=0, val_fraction=0.2, cache_dir=tmp_path / "cache")
    c = load_dataset("mnist", tmp_path, seed=1, val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert (len(a.train_x), len(a.val_x)) == (40, 10)
    assert (a.image_size, a.channels, a.num_classes) == (28, 1, 10)
    assert a.val_x.equal(b.val_x) and a.train_y.equal(b.train_y) and not a.val_x.equal(c.val_x)
    assert a.test_x.equal(c.test_x)  # test never moves
