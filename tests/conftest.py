"""Shared fixtures: the real MNIST copy in ../shared/data, and a Ray instance that tests own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLI = [sys.executable, "-m", "regene_search.cli"]


def mnist_available() -> bool:
    return (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


# The one skip condition of the suite: tests of the real data need the checkout beside shared/
# (as CI and the README have it); they never skip there.
MNIST_MISSING = f"the real MNIST copy is not at {SHARED_DATA}: clone the repository beside shared/"
needs_mnist = pytest.mark.skipif(not mnist_available(), reason=MNIST_MISSING)


def require_mnist() -> None:
    """For fixtures: skip their tests the same way `needs_mnist` does."""
    if not mnist_available():
        pytest.skip(MNIST_MISSING)


@pytest.fixture(scope="session")
def mnist_small():
    """A seeded 5k/1k/1k subset of the real MNIST copy."""
    require_mnist()
    from regene_search.data import load_dataset

    return load_dataset("mnist", SHARED_DATA, seed=0).subset(train=5000, val=1000, test=1000, seed=0)


@pytest.fixture(scope="session", autouse=True)
def _signing_key(tmp_path_factory):
    """The suite signs Tune state with a key of its own (inherited by CLI subprocesses), never the user's."""
    os.environ["REGENE_SEARCH_KEY_FILE"] = str(tmp_path_factory.mktemp("signing") / "signing.key")


@pytest.fixture(scope="session", autouse=True)
def _no_estimates():
    """Runs skip their start-up estimate (seconds of timed steps each); tests/test_estimate.py turns it on."""
    os.environ["REGENE_SEARCH_ESTIMATE"] = "0"


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture
def ray_instance(monkeypatch):
    """An in-process Ray with its own short temp dir; shut down after the test."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    try:
        yield temp_dir
    finally:
        ray.shutdown()


S3_BUCKET = "regene-test"


@pytest.fixture(scope="session")
def s3_root():
    """A results root on a real local S3 endpoint: `s3://regene-test/results`; AWS_* env points at it."""
    from .s3server import local_s3

    with local_s3(S3_BUCKET):
        yield f"s3://{S3_BUCKET}/results"


@dataclass
class SmokeRun:
    run_dir: Path
    proc: subprocess.CompletedProcess  # its stdout was a pipe, as under Slurm or `| cat`
    seconds: float
    mid_search: subprocess.CompletedProcess | None  # `pareto RUN` once the live tables held a trial
    still_searching: bool  # ... and the search was still running when it had printed
    mlflow_uri: str
    live_tables: dict[str, bytes]  # the search's Parquet files as they were at that moment


@pytest.fixture(scope="session")
def smoke_search_run(tmp_path_factory) -> SmokeRun:
    """`regene-search run mnist --budget smoke --stages search --promote-top 3 --mlflow sqlite:///...` (4 trials)
    through the console script, with `pareto RUN` run once the live tables show a trial while the search runs.

    Shared by the search-stage tests and the pipeline tests, which continue the same run; three
    promoted encoders let the evaluate stage rank them against the search scores (proxy.parquet).
    """
    require_mnist()
    from .raycleanup import stop_ray_processes

    results = tmp_path_factory.mktemp("results")
    run_dir = results / "mnist" / "smoke"
    mlflow_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    output = tmp_path_factory.mktemp("output")
    env = {**os.environ, "COLUMNS": "120", "REGENE_SEARCH_PROGRESS_SECONDS": "5", "REGENE_SEARCH_TABLE_SECONDS": "1"}
    started = time.monotonic()
    mid_search, still_searching, live_tables = None, False, {}
    with (output / "stdout").open("w") as stdout, (output / "stderr").open("w") as stderr:
        proc = subprocess.Popen(
            [*CLI, "run", "mnist", "--data-dir", str(SHARED_DATA), "--budget", "smoke", "--stages", "search", "--trials", "4",
             "--promote-top", "3", "--results", str(results), "--name", "smoke", "--ray-temp-dir", ray_tmp, "--mlflow", mlflow_uri,
             "--generators", "convex"],  # the other strategies have their own, smaller run (test_pipeline.py)
            stdout=stdout, stderr=stderr, env=env,
        )
        try:
            while proc.poll() is None and time.monotonic() - started < 900:
                if mid_search is None and (run_dir / "pareto.parquet").exists() and not (run_dir / "checkpoints").exists():
                    live_tables = {name: (run_dir / name).read_bytes() for name in ("trials.parquet", "history.parquet", "pareto.parquet", "hypervolume.parquet")}
                    mid_search = subprocess.run([*CLI, "pareto", str(run_dir)], capture_output=True, text=True, timeout=120, env=env)
                    still_searching = json.loads((run_dir / "stages.json").read_text())["search"]["status"] == "running"
                time.sleep(0.5)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            stop_ray_processes(ray_tmp)
    seconds = time.monotonic() - started
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, (output / "stdout").read_text(), (output / "stderr").read_text())
    assert proc.returncode == 0, completed.stderr[-3000:]
    return SmokeRun(run_dir, completed, seconds, mid_search, still_searching, mlflow_uri, live_tables)


def new_run_folder(root, dataset: str, name: str):
    """A planned and created run folder (what `run` does before its first stage)."""
    from regene_search.results import RunPaths

    paths = RunPaths.plan(root, dataset, name)
    paths.make()
    return paths
