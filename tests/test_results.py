import os
from pathlib import Path

import pyarrow as pa
import pytest

from regene_search.data.names import DatasetRef
from regene_search.errors import RunDirError, UserError
from regene_search.results import (
    HISTORY_COLUMNS,
    RunPaths,
    parquet_rows,
    read_parquet,
    table_from_rows,
    validate_run_name,
    write_json,
    write_parquet,
)


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "a\\b/..", ".hidden", "", "a b", "x/../../y"])
def test_run_names_that_could_escape_are_refused(name):
    with pytest.raises(UserError, match="invalid run name"):
        validate_run_name(name)


@pytest.mark.parametrize("name", ["run1", "2026-11-21_cifar", "a.b-c_d"])
def test_ordinary_run_names_pass(name):
    assert validate_run_name(name) == name


def test_plan_creates_nothing_and_create_makes_the_folder(tmp_path):
    paths = RunPaths.plan(tmp_path / "root", "imagefolder:/data/My Set", "r1")
    assert not (tmp_path / "root").exists()
    assert Path(paths.dir) == (tmp_path / "root" / "imagefolder-My_Set" / "r1").resolve()
    paths.make()
    assert Path(paths.dir).is_dir()


def test_plan_refuses_an_existing_run(tmp_path):
    paths = RunPaths.create(tmp_path, "mnist", "r1")
    write_json({"spec": {}}, paths.run_json)
    with pytest.raises(UserError, match="already holds a run"):
        RunPaths.plan(tmp_path, "mnist", "r1")


def test_inside_refuses_paths_outside_the_run(tmp_path):
    paths = RunPaths.create(tmp_path, "mnist", "r1")
    assert Path(paths.inside("checkpoints/a.pt")).parent == Path(paths.dir) / "checkpoints"
    with pytest.raises(UserError, match="outside the run folder"):
        paths.inside("../../elsewhere.pt")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"x": [1, 2]}), target)


    with pytest.raises(Exception):
        write_parquet("not a table", target)  # type: ignore[arg-type]
    assert read_parquet(target).column("x").to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"], "no temp file may be left behind"


def test_parquet_rows_reads_the_count_from_the_footer(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"x": list(range(1234))}), target)
    assert parquet_rows(target) == 1234 == read_parquet(target).num_rows


def test_truncated_parquet_is_a_run_dir_error(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"x": list(range(100))}), target)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="not a readable Parquet file"):
        read_parquet(target)
    with pytest.raises(RunDirError, match="not a readable Parquet file"):
        parquet_rows(target)
    with pytest.raises(RunDirError, match="missing"):
        read_parquet(tmp_path / "none.parquet")


def test_table_from_rows_keeps_schema_types_even_for_missing_values():
    table = table_from_rows([{"trial_id": "a", "epoch": 1}, {"trial_id": "b", "epoch": 2, "extra": 3.5}], HISTORY_COLUMNS)
    assert table.schema.field("accuracy").type == pa.float64()
    assert table.column("accuracy").null_count == 2
    assert table.column_names[-1] == "extra"


def test_dataset_folder_names():
    assert DatasetRef.of("cifar10").folder == "cifar10"
    assert os.sep not in DatasetRef.of("imagefolder:/a/b/c").folder


def test_run_paths_name_every_stage_file(tmp_path):
    paths = RunPaths.plan(tmp_path, "mnist", "r")
    run = Path(paths.dir)
    assert Path(paths.classifier_checkpoint("t1")) == run / "checkpoints" / "classifier-t1.pt"
    assert Path(paths.decoder_checkpoint("t1")) == run / "checkpoints" / "decoder-t1.pt"
    assert Path(paths.generation_grid("t1", 3)) == run / "figures" / "t1" / "generations-n3.png"
    assert Path(paths.interpolation_strip("t1", 7)) == run / "figures" / "t1" / "interpolation-7.png"
    assert Path(paths.novelty_figure("t1")) == run / "figures" / "t1" / "novelty.png"
    assert Path(paths.neutral_checkpoint("abc")) == run.parent / "_neutral" / "neutral-abc.pt"
    with pytest.raises(UserError, match="outside the run folder"):
        paths.decoder_checkpoint("../../../../x")
