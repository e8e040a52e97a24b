"""Run-folder layout, Parquet schemas, and reading and writing a run's files (always through `storage.Location`)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .config import TRIAL_FIELD_TYPES
from .data.names import DatasetRef
from .errors import RunDirError, UserError
from .storage import Location

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NEUTRAL_CACHE = "_neutral"

# Every table of a run starts with `run`, the run's name (its folder's last component), so the
# tables of several runs concatenate and still say which run each row came from.
RUN_COLUMN = pa.field("run", pa.string())


def run_schema(fields: list[tuple[str, pa.DataType]], *, nullable_ints: tuple[str, ...] = ()) -> pa.Schema:
    """A run table's columns: `run`, then `fields`. `nullable_ints` get the pandas metadata that
    `pa.Table.from_pandas` writes for an `Int64` column, so a plain `pd.read_parquet` gives them
    pandas' nullable Int64 (null as <NA>) instead of float64 with NaN."""
    schema = pa.schema([RUN_COLUMN, *fields])
    if not nullable_ints:
        return schema
    columns = [{"name": n, "field_name": n, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None} for n in nullable_ints]
    return schema.with_metadata({"pandas": json.dumps({"index_columns": [], "column_indexes": [], "columns": columns})})


# The fixed columns of every Parquet file of a run, each documented in docs/results.md (a test
# holds the two together); `trials.parquet` adds one `param_<name>` column per hyperparameter.
UTC_MS = pa.timestamp("ms", tz="UTC")
TRIAL_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("status", pa.string()),
        ("accuracy", pa.float64()),
        ("decoder_mae", pa.float64()),
        ("latent_sparsity", pa.float64()),
        ("joint_score", pa.float64()),
        ("epochs", pa.int64()),
        ("host", pa.string()),
        ("node_ip", pa.string()),
        ("seconds", pa.float64()),
        ("started", UTC_MS),
        ("finished", UTC_MS),
        ("checkpoint", pa.string()),
        ("error", pa.string()),
        ("stop_reason", pa.string()),
        ("optuna_trial", pa.int64()),
    ]
)
HISTORY_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("accuracy", pa.float64()),
        ("decoder_mae", pa.float64()),
        ("latent_sparsity", pa.float64()),
        ("joint_score", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_seconds", pa.float64()),
        ("probe_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("timestamp", pa.float64()),
    ]
)
PARETO_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("accuracy", pa.float64()),
        ("decoder_mae", pa.float64()),
        ("latent_sparsity", pa.float64()),
        ("joint_score", pa.float64()),
        ("rank", pa.int64()),
        ("crowding", pa.float64()),
        ("on_front", pa.bool_()),
        ("promoted", pa.bool_()),
        ("promotion_score", pa.float64()),
        ("promotion_order", pa.int64()),
    ]
)
HYPERVOLUME_COLUMNS = run_schema(
    [
        ("completed", pa.int64()),
        ("trial_id", pa.string()),
        ("hypervolume", pa.float64()),
    ]
)
# `decoder`: `regene` or `lr-livae` (a file from before lr-livae has no column: all `regene`).
DECODER_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("decoder", pa.string()),
        ("epoch", pa.int64()),
        ("loss_mae", pa.float64()),
        ("loss_ssim", pa.float64()),
        ("loss_perceptual", pa.float64()),
        ("loss_kl", pa.float64()),
        ("loss_total", pa.float64()),
        ("w_mae", pa.float64()),
        ("w_ssim", pa.float64()),
        ("w_perceptual", pa.float64()),
        ("w_kl", pa.float64()),
        ("val_mae", pa.float64()),
        ("val_ssim", pa.float64()),
        ("perceptual_backbone", pa.string()),
        ("seconds", pa.float64()),
    ]
)
GENERATION_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("strategy", pa.string()),
        ("class", pa.int64()),
        ("class_name", pa.string()),
        ("n", pa.int64()),
        ("source_indices", pa.list_(pa.int64())),
        ("weights", pa.list_(pa.float64())),
        ("latent_confidence", pa.float64()),
        ("image_confidence", pa.float64()),
        ("threshold", pa.float64()),
        ("image_threshold", pa.float64()),
        ("accepted", pa.bool_()),
        ("image_png", pa.binary()),
    ],
    nullable_ints=("n",),  # n is a convex combination's size: null for the other strategies
)
# The lsdm strategy's latent generator: a row per logging interval (generators/lsdm.py, LSDM_COLUMNS).
LSDM_TABLE_COLUMNS = run_schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("critic_loss", pa.float64()),
        ("generator_loss", pa.float64()),
        ("gradient_penalty", pa.float64()),
        ("w1_estimate", pa.float64()),
        ("seconds", pa.float64()),
    ]
)
# `scope` names what a metric aggregates over, so no reader has to read meaning into nulls.
EVALUATION_SCOPES = ("run", "n", "class", "n_class")
# `subset` of a row judging generations: after the two-step filter (the paper's) or before it.
EVALUATION_SUBSETS = ("accepted", "all")
EVALUATION_COLUMNS = run_schema(
    [
        ("dataset", pa.string()),
        ("trial_id", pa.string()),
        ("strategy", pa.string()),
        ("subset", pa.string()),
        ("scope", pa.string()),
        ("n", pa.int64()),
        ("class", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ],
    nullable_ints=("n", "class"),
)
PROXY_COLUMNS = run_schema(
    [
        ("dataset", pa.string()),
        ("proxy", pa.string()),
        ("proxy_better", pa.string()),
        ("downstream", pa.string()),
        ("downstream_better", pa.string()),
        ("k", pa.int64()),
        ("kendall_tau", pa.float64()),
        ("spearman_rho", pa.float64()),
        ("orientation", pa.int64()),
        ("trial_ids", pa.list_(pa.string())),
    ]
)
_PARAM_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
# trials.parquet's columns: the fixed ones, then `param_<name>` of every hyperparameter (`TrialConfig`).
TRIAL_SCHEMA = pa.schema(list(TRIAL_COLUMNS) + [pa.field(f"param_{name}", _PARAM_TYPES[kind]) for name, kind in TRIAL_FIELD_TYPES.items()])


# Every Parquet file of a run -> its columns.
TABLES = {
    "trials.parquet": TRIAL_SCHEMA,
    "history.parquet": HISTORY_COLUMNS,
    "pareto.parquet": PARETO_COLUMNS,
    "hypervolume.parquet": HYPERVOLUME_COLUMNS,
    "decoder.parquet": DECODER_COLUMNS,
    "generations.parquet": GENERATION_COLUMNS,
    "lsdm.parquet": LSDM_TABLE_COLUMNS,
    "evaluation.parquet": EVALUATION_COLUMNS,
    "proxy.parquet": PROXY_COLUMNS,
}


def validate_run_name(name: str) -> str:
    """A run name is one path component: letters, digits, '.', '_' and '-', not starting with '.'."""
    if not _NAME.match(name) or ".." in name:
        raise UserError(f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' only (no path separators or '..')")
    return name


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run lives: `ROOT/DATASET/NAME/`, on local disk or a `pyarrow.fs` URI."""

    dir: Location

    @classmethod
    def plan(cls, root: Location | str | os.PathLike, dataset: DatasetRef | str, name: str) -> RunPaths:
        """The folder a new run will use, checked but not created: nothing is written before the run starts."""
        validate_run_name(name)
        root = Location.of(root)
        run_dir = root / DatasetRef.of(dataset).folder / name
        if run_dir == root or not run_dir.is_within(root):
            raise UserError(f"run folder {run_dir} would be outside the results root {root}")
        try:
            taken = (run_dir / "run.json").exists()
        except OSError as exc:
            raise UserError(f"results root {root} is not reachable: {str(exc).splitlines()[0]}") from None
        if taken:
            raise UserError(f"run folder {run_dir} already holds a run: pick another --name or continue it with --resume")
        root.check_writable()
        return cls(run_dir)

    def make(self) -> None:
        try:
            self.dir.make_dir()
        except OSError as exc:
            raise UserError(f"cannot create the run folder {self.dir}: {getattr(exc, 'strerror', None) or exc}") from None

    @classmethod
    def existing(cls, run_dir: Location | str | os.PathLike) -> RunPaths:
        """An existing run folder; it must hold `run.json`."""
        run_dir = Location.of(run_dir)
        try:
            found = (run_dir / "run.json").is_file()
        except OSError as exc:
            raise RunDirError(f"{run_dir} is not reachable: {str(exc).splitlines()[0]}") from None
        if not found:
            raise RunDirError(f"{run_dir} is not a regene-search run folder (no run.json)")
        return cls(run_dir)

    run_json = property(lambda self: self.dir / "run.json")
    trials = property(lambda self: self.dir / "trials.parquet")
    history = property(lambda self: self.dir / "history.parquet")
    pareto = property(lambda self: self.dir / "pareto.parquet")
    hypervolume = property(lambda self: self.dir / "hypervolume.parquet")
    decoder = property(lambda self: self.dir / "decoder.parquet")
    generations = property(lambda self: self.dir / "generations.parquet")
    lsdm = property(lambda self: self.dir / "lsdm.parquet")
    evaluation = property(lambda self: self.dir / "evaluation.parquet")
    proxy = property(lambda self: self.dir / "proxy.parquet")
    tune_dir = property(lambda self: self.dir / "tune")
    checkpoints = property(lambda self: self.dir / "checkpoints")
    figures = property(lambda self: self.dir / "figures")
    stages_json = property(lambda self: self.dir / "stages.json")
    report_html = property(lambda self: self.dir / "report.html")
    lock = property(lambda self: self.dir / ".lock")
    # The paper's section 4.2 as a figure: probe decoder MAE against depth, latent size, sparsity.
    probe_mae_figure = property(lambda self: self.figures / "probe-mae.png")
    # The figures each stage draws from its tables (plots.py); docs/results.md says what each shows.
    front_figure = property(lambda self: self.figures / "front.png")
    learning_curves_figure = property(lambda self: self.figures / "learning-curves.png")
    hypervolume_figure = property(lambda self: self.figures / "hypervolume.png")
    decoder_curves_figure = property(lambda self: self.figures / "decoder-curves.png")
    # Shared by every run of the dataset under the same root (the neutral classifier's cache).
    dataset_dir = property(lambda self: self.dir.parent)

    def classifier_checkpoint(self, trial_id: str) -> Location:
        """A promoted encoder, copied out of Tune's folder by the search stage."""
        return self.inside(f"checkpoints/classifier-{trial_id}.pt")

    def decoder_checkpoint(self, trial_id: str, kind: str = "regene") -> Location:
        """The ReGene decoder of an encoder, or its lr-livae decoder (with its z_u encoder) next to it."""
        return self.inside(f"checkpoints/decoder-{trial_id}.pt" if kind == "regene" else f"checkpoints/{kind}-decoder-{trial_id}.pt")

    def generation_grid(self, trial_id: str, n: int) -> Location:
        return self.inside(f"figures/{trial_id}/generations-n{n}.png")

    def strategy_grid(self, trial_id: str, strategy: str) -> Location:
        """Accepted generations of a strategy other than convex (which has a grid per n)."""
        return self.inside(f"figures/{trial_id}/generations-{strategy}.png")

    def lsdm_checkpoint(self, trial_id: str) -> Location:
        return self.inside(f"checkpoints/lsdm-{trial_id}.pt")

    def interpolation_strip(self, trial_id: str, cls: int) -> Location:
        return self.inside(f"figures/{trial_id}/interpolation-{cls}.png")

    def novelty_figure(self, trial_id: str) -> Location:
        return self.inside(f"figures/{trial_id}/novelty.png")

    def reconstructions_figure(self, trial_id: str) -> Location:
        return self.inside(f"figures/{trial_id}/reconstructions.png")

    def acceptance_figure(self, trial_id: str) -> Location:
        return self.inside(f"figures/{trial_id}/acceptance.png")

    def filter_scatter_figure(self, trial_id: str) -> Location:
        return self.inside(f"figures/{trial_id}/filter-scatter.png")

    def rejected_figure(self, trial_id: str) -> Location:
        return self.inside(f"figures/{trial_id}/rejected.png")

    def neutral_checkpoint(self, key: str) -> Location:
        """The neutral classifier cached for every run of this dataset under the same root, by its recipe's key."""
        return self.dataset_dir / NEUTRAL_CACHE / f"neutral-{key}.pt"

    @property
    def name(self) -> str:
        """The run's name: the run folder's last component (`ROOT/DATASET/NAME`)."""
        return self.dir.name

    def write_table(self, rows: list[dict[str, Any]], schema: pa.Schema, target: Location) -> None:
        """Write one of the run's tables (`schema`, which starts with `run`), atomically; every row's
        `run` is this run's name. The one place run tables are written, so each carries its run."""
        if schema.field(0) != RUN_COLUMN:
            raise ValueError(f"a run table's schema starts with {RUN_COLUMN}, not {schema.field(0)}")
        table = table_from_rows(rows, schema)
        write_parquet(table.set_column(0, RUN_COLUMN, pa.repeat(pa.scalar(self.name, pa.string()), len(table))), target)

    def inside(self, path: str | os.PathLike) -> Location:
        """`path` under the run folder, guaranteed to stay inside it."""
        target = self.dir / path
        if target == self.dir or not target.is_within(self.dir):
            raise UserError(f"refusing to write {target}: outside the run folder {self.dir}")
        return target


@contextmanager
def run_lock(paths: RunPaths) -> Iterator[None]:
    """Hold `RUN/.lock` while a run writes its folder: one run per folder at a time.

    A lock whose process is gone (same host, PID not running) is stale and taken over; a live one,
    or one from another host, refuses with one line. Local folders take the lock atomically
    (O_EXCL); on an object store it is checked, then written (a race of a few milliseconds).
    """
    lock = paths.lock
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for attempt in (1, 2):
        try:
            if lock.is_local:
                Path(lock).parent.mkdir(parents=True, exist_ok=True)
                with os.fdopen(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
                    json.dump(record, f)
            elif lock.exists():
                raise FileExistsError(str(lock))
            else:
                write_json(record, lock)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            stale = holder is not None and holder.get("host") == record["host"] and not _pid_alive(holder.get("pid"))
            if attempt == 2 or not stale:
                who = f"PID {holder.get('pid')} on {holder.get('host')}" if holder else "another run"
                raise UserError(f"run folder {paths.dir} is in use by {who}; if that run is gone, delete {lock}") from None
            lock.delete()
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            lock.delete()


def _lock_holder(lock: Location) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_bytes())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_bytes(data: bytes, target: Location | str | os.PathLike) -> None:
    Location.of(target).write_bytes(data)


def write_parquet(table: pa.Table, target: Location | str | os.PathLike) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(buffer.getvalue().to_pybytes(), target)


def write_json(obj: Any, target: Location | str | os.PathLike) -> None:
    write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), target)


def read_json(source: Location | str | os.PathLike) -> Any:
    source = Location.of(source)
    try:
        return json.loads(source.read_bytes())
    except FileNotFoundError:
        raise RunDirError(f"{source} is missing") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{source} is unreadable: {exc}") from None


def read_run_record(paths: RunPaths) -> dict[str, Any]:
    """run.json, checked to hold a run's `spec` before anything trusts it."""
    record = read_json(paths.run_json)
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise RunDirError(f"{paths.run_json} is not a regene-search run record (no 'spec' object)")
    return record


def read_stages(paths: RunPaths) -> dict[str, dict[str, Any]]:
    """stages.json (stage -> its status record), or {} before the first stage; a malformed file is a `RunDirError`."""
    if not paths.stages_json.exists():
        return {}
    stages = read_json(paths.stages_json)
    if not isinstance(stages, dict) or not all(isinstance(v, dict) and isinstance(v.get("status"), str) for v in stages.values()):
        raise RunDirError(f"{paths.stages_json} is malformed: expected each stage's record with a 'status'")
    return stages


def read_parquet(source: Location | str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file of a run (only `columns` if given); a missing or truncated file is a `RunDirError`."""
    return _parquet(lambda path, filesystem: pq.read_table(path, filesystem=filesystem, columns=columns), source)


def parquet_rows(source: Location | str | os.PathLike) -> int:
    """The row count from the file's footer alone (generations.parquet holds every PNG)."""
    return _parquet(pq.read_metadata, source).num_rows


def _parquet(read, source: Location | str | os.PathLike):
    source = Location.of(source)
    try:
        return read(source.path, filesystem=source.fs)
    except FileNotFoundError:
        raise RunDirError(f"{source} is missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise RunDirError(f"{source} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table with `schema` first, then any extra columns with inferred types."""
    known = set(schema.names)  # Schema.names builds a new list on every access
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in known))
    columns = {name: [row.get(name) for row in rows] for name in schema.names + extra}
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema] + [pa.array(columns[name]) for name in extra]
    fields = list(schema) + [pa.field(name, array.type) for name, array in zip(extra, arrays[len(schema) :])]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema.metadata))  # keeps the pandas metadata
