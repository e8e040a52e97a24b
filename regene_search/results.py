"""Run-folder layout, Parquet schemas and atomic writes. Every file a run writes goes through here."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunDirError, UserError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Fixed columns of each table; `trials.parquet` adds one `param_<name>` column per hyperparameter.
TRIAL_COLUMNS = pa.schema(
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
        ("checkpoint", pa.string()),
        ("error", pa.string()),
        ("stop_reason", pa.string()),
    ]
)
HISTORY_COLUMNS = pa.schema(
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
PARETO_COLUMNS = pa.schema(
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
    ]
)
HYPERVOLUME_COLUMNS = pa.schema(
    [
        ("completed", pa.int64()),
        ("trial_id", pa.string()),
        ("hypervolume", pa.float64()),
    ]
)


def validate_run_name(name: str) -> str:
    """A run name is one path component: letters, digits, '.', '_' and '-', not starting with '.'."""
    if not _NAME.match(name) or ".." in name:
        raise UserError(f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' only (no path separators or '..')")
    return name


def dataset_folder(dataset: str) -> str:
    """The folder name of a dataset in the results root (`imagefolder:PATH` -> `imagefolder-<leaf>`)."""
    if dataset.startswith("imagefolder:"):
        leaf = Path(dataset.split(":", 1)[1]).resolve().name or "root"
        return "imagefolder-" + re.sub(r"[^A-Za-z0-9._-]", "_", leaf)
    return dataset


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run lives: `ROOT/DATASET/NAME/`."""

    dir: Path

    @classmethod
    def plan(cls, root: Path, dataset: str, name: str) -> RunPaths:
        """The folder a new run will use, checked but not created: nothing is written before the run starts."""
        validate_run_name(name)
        root = Path(root).resolve()
        run_dir = (root / dataset_folder(dataset) / name).resolve()
        if root not in run_dir.parents:
            raise UserError(f"run folder {run_dir} would be outside the results root {root}")
        if (run_dir / "run.json").exists():
            raise UserError(f"run folder {run_dir} already holds a run: pick another --name or continue it with --resume")
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"results root {root} is not writable")
        return cls(run_dir)

    @classmethod
    def create(cls, root: Path, dataset: str, name: str) -> RunPaths:
        """Plan the run folder and make it."""
        paths = cls.plan(root, dataset, name)
        paths.make()
        return paths

    def make(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {self.dir}: {exc.strerror or exc}") from None

    @classmethod
    def existing(cls, run_dir: Path) -> RunPaths:
        """An existing run folder; it must hold `run.json`."""
        run_dir = Path(run_dir)
        if not (run_dir / "run.json").is_file():
            raise RunDirError(f"{run_dir} is not a regene-search run folder (no run.json)")
        return cls(run_dir.resolve())

    run_json = property(lambda self: self.dir / "run.json")
    trials = property(lambda self: self.dir / "trials.parquet")
    history = property(lambda self: self.dir / "history.parquet")
    pareto = property(lambda self: self.dir / "pareto.parquet")
    hypervolume = property(lambda self: self.dir / "hypervolume.parquet")
    decoder = property(lambda self: self.dir / "decoder.parquet")
    generations = property(lambda self: self.dir / "generations.parquet")
    evaluation = property(lambda self: self.dir / "evaluation.parquet")
    tune_dir = property(lambda self: self.dir / "tune")
    checkpoints = property(lambda self: self.dir / "checkpoints")
    figures = property(lambda self: self.dir / "figures")
    stages_json = property(lambda self: self.dir / "stages.json")

    def inside(self, path: Path) -> Path:
        """`path` resolved, guaranteed to stay inside the run folder."""
        resolved = (self.dir / path).resolve()
        if resolved != self.dir and self.dir not in resolved.parents:
            raise UserError(f"refusing to write {resolved}: outside the run folder {self.dir}")
        return resolved


def _atomic(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, path: Path) -> None:
    _atomic(Path(path), lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_bytes(data: bytes, path: Path) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def write_json(obj: Any, path: Path) -> None:
    write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is unreadable: {exc}") from None


def read_parquet(path: Path) -> pa.Table:
    """Read a Parquet file of a run; a missing or truncated file is a `RunDirError`."""
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise RunDirError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table with `schema` first, then any extra columns with inferred types."""
    extra = [k for row in rows for k in row if k not in schema.names]
    extra = list(dict.fromkeys(extra))
    columns = {name: [row.get(name) for row in rows] for name in schema.names + extra}
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema] + [pa.array(columns[name]) for name in extra]
    return pa.Table.from_arrays(arrays, names=schema.names + extra)
