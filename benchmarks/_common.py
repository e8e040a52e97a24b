"""Helpers shared by the benchmark scripts: data, Ray lifetime, machine description, output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


def mnist_available() -> bool:
    return (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def load(dataset: str, *, train: int | None, val: int | None, seed: int = 0):
    """A seeded subset of `mnist` (the real copy in ../shared/data) or the generated `shapes`."""
    from regene_search.data import load_dataset

    data_dir = SHARED_DATA if dataset != "shapes" else None
    return load_dataset(dataset, data_dir, seed=0).subset(train=train, val=val, test=0, seed=seed)


def default_dataset() -> str:
    return "mnist" if mnist_available() else "shapes"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = None
    with contextlib.suppress(OSError):
        load = [float(v) for v in os.getloadavg()]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": load,
    }


def median(values) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def local_ray(num_cpus: int = 2):
    """An in-process Ray with its own temp dir (auth off, no dashboard), shut down on exit."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir = tempfile.mkdtemp(prefix="rs-bench-", dir="/tmp")
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING", log_to_driver=False)
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    tmp.replace(path)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
