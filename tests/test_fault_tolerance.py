"""Nothing is lost: a worker node dies mid-search, or the driver is SIGKILLed and the run resumed."""

from __future__ import annotations

import json
import os
import posixpath
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pandas as pd
import pytest

from regene_search.results import read_parquet
from regene_search.search.study import load_study
from regene_search.storage import Location

from .conftest import CLI, SHARED_DATA, needs_mnist
from .raycleanup import pids_using, stop_ray_processes

pytestmark = [pytest.mark.slow, needs_mnist]

SMOKE_SEARCH = ["run", "mnist", "--data-dir", str(SHARED_DATA), "--budget", "smoke", "--stages", "search", "--trials", "4"]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def checkpoints(run_dir: Location) -> set[str]:
    """The trial checkpoint folders Tune has written so far."""
    return {posixpath.dirname(f.relative_to(run_dir)) for f in (run_dir / "tune" / "search").files() if "/checkpoint_" in f.path}


def assert_every_trial_once(run_dir: Location, trials: int) -> pd.DataFrame:
    table = read_parquet(run_dir / "trials.parquet").to_pandas()
    assert len(table) == trials and table["trial_id"].is_unique
    assert set(table["status"]) == {"COMPLETED"}, table[["trial_id", "status", "error"]].to_string(max_colwidth=400)
    history = read_parquet(run_dir / "history.parquet").to_pandas()
    assert not history.duplicated(["trial_id", "epoch"]).any()
    complete = dict(history.groupby("trial_id").size()) == dict(zip(table["trial_id"], table["epochs"]))
    assert complete, history.groupby("trial_id").size()
    # The Optuna study continued across the interruption: each trial once, told the values trials.parquet holds.
    study = {t.number: t for t in load_study(run_dir).trials}
    for row in table.itertuples():
        told = study.pop(row.optuna_trial)
        assert told.user_attrs["trial_id"] == row.trial_id and told.values == [row.accuracy, row.decoder_mae, row.latent_sparsity]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study.values()), "only orphans, suggested and never run, are left"
    return table


def assert_search_unfinished(run_dir: Location, trials: int) -> None:
    """The search stage is not done; its live tables (if written yet) show it under way."""
    assert json.loads((run_dir / "stages.json").read_bytes())["search"]["status"] != "done"
    if (run_dir / "trials.parquet").exists():
        live = read_parquet(run_dir / "trials.parquet").to_pandas()
        assert len(live) < trials or live["status"].isin(["RUNNING", "PENDING"]).any(), live[["trial_id", "status"]]


@contextmanager
def search_under_way(results: str | Path, name: str, tmp_path: Path, *, checkpoints_first: int = 1) -> Iterator[subprocess.Popen]:
    """A smoke search in the background with a Ray of its own, yielded once it has written
    `checkpoints_first` trial checkpoints; stdout goes to tmp_path/driver.log, stderr to driver.err.
    On exit the driver is killed if still running and its Ray processes stopped."""
    run_dir = Location.of(results) / "mnist" / name
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    with (tmp_path / "driver.log").open("w") as out, (tmp_path / "driver.err").open("w") as err:
        driver = subprocess.Popen([*CLI, *SMOKE_SEARCH, "--results", str(results), "--name", name, "--ray-temp-dir", temp_dir], stdout=out, stderr=err)
        try:
            wait_for(lambda: len(checkpoints(run_dir)) >= checkpoints_first or driver.poll() is not None, 300, f"{checkpoints_first} trial checkpoint(s)")
            assert driver.poll() is None, (tmp_path / "driver.err").read_text()[-3000:]
            yield driver
        finally:
            driver.kill()
            stop_ray_processes(temp_dir)


def our_lines(stderr: str) -> list[str]:
    """stderr without what Ray forwards from its workers ("(name pid=N) ...": a trial actor stopped
    mid-epoch may print Python's shutdown noise there) or its own warnings."""
    return [line for line in stderr.splitlines() if line.strip() and " pid=" not in line and "WARNING" not in line]


def resume_in_its_own_ray(run_dir: Location) -> subprocess.CompletedProcess:
    """`run --resume RUN_DIR` with a Ray of its own, whose processes are stopped afterwards."""
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    started = time.monotonic()
    try:
        resumed = subprocess.run([*CLI, "run", "--resume", str(run_dir), "--ray-temp-dir", temp_dir], capture_output=True, text=True, timeout=600)
    finally:
        stop_ray_processes(temp_dir)
    print(f"resume of {run_dir} took {time.monotonic() - started:.1f} s")
    return resumed


@pytest.fixture
def two_node_cluster():
    """A head on 127.0.0.2 and a worker on 127.0.0.3, token auth on both, in their own temp dir."""
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    port = "6419"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [ray_cli(), "start", "--head", "--node-ip-address=127.0.0.2", f"--port={port}", f"--temp-dir={temp_dir}",
             "--include-dashboard=false", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )
        subprocess.run(
            [ray_cli(), "start", f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )
        yield f"127.0.0.2:{port}", temp_dir, env
    finally:
        stop_ray_processes(temp_dir)


def worker_raylet_pid(temp_dir: str) -> int:
    for pid in pids_using(temp_dir):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "raylet/raylet" in cmdline and "node_ip_address=127.0.0.3" in cmdline:
            return pid
    raise AssertionError("the worker node's raylet is not running")


def test_search_survives_the_death_of_a_worker_node(two_node_cluster, tmp_path):
    address, temp_dir, env = two_node_cluster
    results = tmp_path / "results"
    run_dir = Location.of(results / "mnist" / "twonode")
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        driver = subprocess.Popen(
            [*CLI, *SMOKE_SEARCH, "--address", address, "--results", str(results), "--name", "twonode", "--max-concurrent", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: len(checkpoints(run_dir)) >= 1 or driver.poll() is not None, 300, "a first trial checkpoint")
            os.kill(worker_raylet_pid(temp_dir), signal.SIGKILL)
            driver.wait(timeout=600)
        finally:
            driver.kill()
    assert driver.returncode == 0, log_path.read_text()[-3000:]
    assert_every_trial_once(run_dir, 4)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_driver_killed_mid_search_resumes_without_loss_or_duplicates(storage, tmp_path, request):
    """On local disk and on an s3:// results root, where Tune restores the experiment from S3."""
    results = str(tmp_path / "results") if storage == "local" else request.getfixturevalue("s3_root") + "/killed"
    run_dir = Location.of(results) / "mnist" / "killed"
    with search_under_way(results, "killed", tmp_path, checkpoints_first=2) as driver:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    assert_search_unfinished(run_dir, 4)

    resumed = resume_in_its_own_ray(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_every_trial_once(run_dir, 4)

    again = subprocess.run([*CLI, "run", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "stage search: already done, skipped" in again.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_trial_ends_the_run_and_resume_finishes_every_trial_once(signum, tmp_path):
    """Ctrl-C or SIGTERM: Tune stops gracefully, the stage is recorded interrupted (never done), exit 128 + signal."""
    results = tmp_path / "results"
    run_dir = Location.of(results / "mnist" / "signalled")
    with search_under_way(results, "signalled", tmp_path) as driver:
        driver.send_signal(signum)
        driver.wait(timeout=300)  # generous: the shared cores may be saturated
    stderr = (tmp_path / "driver.err").read_text()
    assert driver.returncode == 128 + signum, stderr[-3000:]
    assert our_lines(stderr) == [f"regene-search: {signal.Signals(signum).name} stopped stage search; continue with: regene-search run --resume {run_dir}"], stderr[-3000:]
    stages = json.loads((run_dir / "stages.json").read_bytes())
    assert stages["search"]["status"] == "interrupted" and stages["search"]["reason"] == f"stopped by {signal.Signals(signum).name}"
    assert_search_unfinished(run_dir, 4)

    resumed = resume_in_its_own_ray(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_every_trial_once(run_dir, 4)
    assert json.loads((run_dir / "stages.json").read_bytes())["search"]["status"] == "done"


@pytest.fixture
def small_disk(tmp_path):
    """A real 320 MiB filesystem (tmpfs) to fill; mounting one needs root, as CI has."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320m", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, free - leave_bytes))
    return filler


def test_a_disk_filling_mid_search_stops_in_one_line_and_resume_finishes(small_disk, tmp_path):
    """Under 256 MiB free the search stops the way Ctrl-C does: one line, exit 2, a folder --resume finishes."""
    results = small_disk / "results"
    run_dir = Location.of(results / "mnist" / "filling")
    with search_under_way(results, "filling", tmp_path) as driver:
        filler = fill(small_disk, leave_bytes=128 * 2**20)
        driver.wait(timeout=300)
    stderr = (tmp_path / "driver.err").read_text()
    assert driver.returncode == 2, stderr[-3000:]
    ours = our_lines(stderr)
    assert len(ours) == 1 and f"MiB free, under the 256 MiB a run keeps to save its state; free some space, then continue with: regene-search run --resume {run_dir}" in ours[0], stderr[-3000:]
    stages = json.loads((run_dir / "stages.json").read_bytes())
    assert stages["search"]["status"] == "failed" and "MiB free" in stages["search"]["reason"]
    assert_search_unfinished(run_dir, 4)

    refused = subprocess.run([*CLI, *SMOKE_SEARCH, "--results", str(results), "--name", "second"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "under the 256 MiB a run keeps to save its state; free some space, then run again" in refused.stderr
    assert not (results / "mnist" / "second").exists(), "a run refused for space must not leave a folder"

    filler.unlink()
    resumed = resume_in_its_own_ray(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_every_trial_once(run_dir, 4)
