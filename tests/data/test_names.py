"""Dataset names are parsed once, into a canonical reference that every writer uses."""

from pathlib import Path

import pytest

from regene_search.config import RunSpec
from regene_search.data import DataError, list_datasets
from regene_search.data.names import FAMILIES, DatasetRef
from regene_search.results import RunPaths


def test_families_are_the_registry_in_order():
    assert FAMILIES == tuple(info.name for info in list_datasets())


def test_an_image_folder_gets_one_canonical_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my pets").mkdir()
    spellings = ["imagefolder:my pets", "imagefolder:./my pets", f"imagefolder:{tmp_path}/x/../my pets"]
    refs = {DatasetRef.of(s) for s in spellings}
    assert len(refs) == 1
    [ref] = refs
    assert ref.name == f"imagefolder:{(tmp_path / 'my pets').resolve()}" and str(ref) == ref.name
    assert ref.family == "imagefolder" and ref.folder == "imagefolder-my_pets"
    assert DatasetRef.of(ref) is ref


def test_registered_names_are_their_own_folder():
    ref = DatasetRef.of("cifar10")
    assert (ref.name, ref.family, ref.path, ref.folder) == ("cifar10", "cifar10", None, "cifar10")


@pytest.mark.parametrize("name", ["svhn", "MNIST", "imagefolder:", "mnist:x"])
def test_unknown_names_are_refused(name):
    with pytest.raises(DataError, match=f"unknown dataset '{name}'"):
        DatasetRef.of(name)


def test_run_spec_and_run_folder_carry_the_canonical_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = RunSpec(dataset="imagefolder:./faces/", data_dir=None, budget="smoke", name="r", results_root=str(tmp_path), space_path="x.toml")
    assert spec.dataset == DatasetRef("imagefolder", (tmp_path / "faces").resolve())
    assert spec.to_json()["dataset"] == f"imagefolder:{(tmp_path / 'faces').resolve()}"
    assert RunSpec.from_json(spec.to_json()) == spec
    assert Path(RunPaths.plan(tmp_path, spec.dataset, "r").dir).parent.name == "imagefolder-faces"
