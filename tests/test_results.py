import json
import os
import socket
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regene_search.data.names import DatasetRef
from regene_search.errors import RunDirError, UserError
from regene_search.results import (
    EVALUATION_COLUMNS,
    EVALUATION_SCOPES,
    HISTORY_COLUMNS,
    TABLES,
    RunPaths,
    parquet_rows,
    run_lock,
    read_parquet,
    table_from_rows,
    validate_run_name,
    write_json,
    write_parquet,
)
from regene_search.stages.evaluate import Metrics

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


def test_every_run_table_starts_with_the_runs_name(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "night-7")
    for name, schema in TABLES.items():
        target = paths.dir / name
        paths.write_table([{}, {"extra": 1.5}], schema, target)
        table = read_parquet(target)
        assert table.schema.names == [*schema.names, "extra"] and table.select(schema.names).schema == schema, name
        assert table.schema.metadata == schema.metadata, name  # the pandas metadata of evaluation.parquet
        assert table.column("run").to_pylist() == ["night-7", "night-7"], name
        paths.write_table([], schema, target)
        assert read_parquet(target).schema == schema and read_parquet(target).num_rows == 0, name
    with pytest.raises(ValueError, match="starts with"):
        paths.write_table([], pa.schema([("trial_id", pa.string())]), paths.trials)


def evaluation_rows() -> list[dict]:
    """Rows the evaluate stage's `Metrics` makes, one of each scope, with null trial_id, n and class."""
    m = Metrics("mnist")
    m.add("neutral_test_accuracy", 0.97)
    m.add("accept_rate", 0.8, trial_id="t1")
    m.add("accept_rate", 0.7, trial_id="t1", n=2)
    m.add("neutral_acc_gen", 0.9, trial_id="t1", cls=3)
    m.add("accept_rate", 0.6, trial_id="t1", n=2, cls=3)
    m.add("accepted_count", 12, trial_id="t1", n=3)
    return m.rows


def test_evaluation_reads_back_with_nullable_integers_and_a_scope_for_every_row(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "r")
    paths.write_table(evaluation_rows(), EVALUATION_COLUMNS, paths.evaluation)
    frame = pd.read_parquet(tmp_path / "mnist" / "r" / "evaluation.parquet")  # plain pandas, no hints
    assert frame["n"].dtype == "Int64" and frame["class"].dtype == "Int64", frame.dtypes
    assert frame["n"].tolist() == [pd.NA, pd.NA, 2, pd.NA, 2, 3] and frame["class"].isna().tolist() == [True, True, True, False, False, True]
    assert frame["scope"].tolist() == ["run", "run", "n", "class", "n_class", "n"] and set(frame["scope"]) == set(EVALUATION_SCOPES)
    # Nulls in n and class no longer carry the meaning: a pivot over scope keeps every row.
    pivot = frame.pivot_table(index="scope", columns="metric", values="value", aggfunc="size")
    assert pivot.sum().sum() == len(frame) == 6
    assert pl.read_parquet(paths.evaluation.path)["n"].dtype == pl.Int64
    assert duckdb.sql(f"select count(*) from '{paths.evaluation.path}' where scope = 'run' and n is null").fetchall() == [(2,)]


def test_nullable_int_metadata_is_what_pandas_itself_writes():
    frame = pd.DataFrame({"n": pd.array([1, None], dtype="Int64"), "class": pd.array([None, 2], dtype="Int64")})
    theirs = json.loads(pa.Table.from_pandas(frame, preserve_index=False).schema.metadata[b"pandas"])
    ours = json.loads(EVALUATION_COLUMNS.metadata[b"pandas"])
    assert ours["columns"] == theirs["columns"] and ours["index_columns"] == theirs["index_columns"] == []


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


def test_two_runs_tables_concatenate_and_stay_apart_by_run(tmp_path):
    frames = []
    for name in ("monday", "tuesday"):
        paths = new_run_folder(tmp_path, "mnist", name)
        paths.write_table(evaluation_rows(), EVALUATION_COLUMNS, paths.evaluation)
        frames.append(pd.read_parquet(tmp_path / "mnist" / name / "evaluation.parquet"))
    both = pd.concat(frames, ignore_index=True)
    assert both["run"].value_counts().to_dict() == {"monday": 6, "tuesday": 6}
    by_run = both.pivot_table(index=["run", "scope"], columns="metric", values="value", aggfunc="size")
    assert by_run.sum().sum() == 12 and set(by_run.index.get_level_values("run")) == {"monday", "tuesday"}
