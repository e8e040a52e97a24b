import json
import os
import socket
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from regene_search.data.names import DatasetRef
from regene_search.errors import RunDirError, UserError
from regene_search.results import (
    HISTORY_COLUMNS,
    RunPaths,
    parquet_rows,
    run_lock,
    read_parquet,
    table_from_rows,
    validate_run_name,
    write_json,
    write_parquet,
)

from .conftest import new_run_folder


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
    paths = new_run_folder(tmp_path, "mnist", "r1")
    write_json({"spec": {}}, paths.run_json)
    with pytest.raises(UserError, match="already holds a run"):
        RunPaths.plan(tmp_path, "mnist", "r1")


def test_inside_refuses_paths_outside_the_run(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "r1")
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


@pytest.fixture(params=["local", "s3"])
def run_paths(request, tmp_path):
    """A run folder's paths, on local disk or on the session's S3 endpoint."""
    root = tmp_path if request.param == "local" else f"{request.getfixturevalue('s3_root')}/locks-{os.getpid()}"
    return RunPaths.plan(root, "mnist", f"lock-{request.node.name.replace('[', '-').rstrip(']')}")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_run_lock_refuses_a_second_holder_and_is_released(run_paths):
    with run_lock(run_paths):
        assert json.loads(run_paths.lock.read_bytes())["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"in use by PID {os.getpid()} on {socket.gethostname()}"):
            with run_lock(run_paths):
                pass
    assert not run_paths.lock.exists()
    with pytest.raises(RuntimeError):
        with run_lock(run_paths):
            raise RuntimeError("a stage failed")
    assert not run_paths.lock.exists(), "a failed run releases its lock"


@pytest.mark.parametrize("holder", ["dead-process-here", "garbage"])
def test_a_stale_lock_is_taken_over(run_paths, holder):
    text = json.dumps({"pid": dead_pid(), "host": socket.gethostname()}) if holder == "dead-process-here" else "not json"
    run_paths.lock.write_bytes(text.encode())
    if holder == "garbage":  # unreadable: nobody can be shown to hold it, so it is not taken over silently
        with pytest.raises(UserError, match="in use by another run"):
            with run_lock(run_paths):
                pass
        return
    with run_lock(run_paths):
        assert json.loads(run_paths.lock.read_bytes())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_never_taken_over(run_paths):
    run_paths.lock.write_bytes(json.dumps({"pid": dead_pid(), "host": "elsewhere"}).encode())
    with pytest.raises(UserError, match="in use by PID .* on elsewhere"):
        with run_lock(run_paths):
            pass
