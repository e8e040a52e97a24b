"""A real Ray Tune search of 4 smoke trials on the real MNIST copy, through the console script."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import optuna
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from regene_search.results import HISTORY_COLUMNS, HYPERVOLUME_COLUMNS, PARETO_COLUMNS, TABLES, TRIAL_SCHEMA
from regene_search.storage import Location
from regene_search.models import load_classifier

from ..conftest import CLI, needs_mnist, new_run_folder

pytestmark = [pytest.mark.slow, needs_mnist]


def test_search_prints_the_dashboard_url_and_a_summary(smoke_search_run):
    proc, seconds = smoke_search_run.proc, smoke_search_run.seconds
    out = proc.stdout + proc.stderr
    assert "dashboard: http://127.0.0.1:" in out
    assert "search: 4/4 trials completed" in out
    assert seconds < 300


SEARCH_TABLES = ("trials.parquet", "history.parquet", "pareto.parquet", "hypervolume.parquet")


def test_all_files_are_written_with_the_documented_columns(smoke_search_run):
    run_dir = smoke_search_run.run_dir
    for name in SEARCH_TABLES:  # the schemas docs/results.md documents (tests/test_docs_schemas.py)
        assert pq.read_schema(run_dir / name) == TABLES[name], name
        assert set(pq.read_table(run_dir / name, columns=["run"]).column("run").to_pylist()) == {"smoke"}, name
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert list(trials.columns) == TRIAL_SCHEMA.names
    assert {"param_blocks", "param_lr", "param_latent_activation", "param_augment"} <= set(trials.columns)
    assert trials["trial_id"].is_unique and len(trials) == 4
    assert set(trials["status"]) == {"COMPLETED"}
    assert trials["param_blocks"].dtype == "int64" and trials["param_lr"].dtype == "float64"
    assert trials[["accuracy", "decoder_mae", "latent_sparsity"]].notna().all().all()

    history = pl.read_parquet(run_dir / "history.parquet")
    assert history.columns == HISTORY_COLUMNS.names
    per_trial = dict(history.group_by("trial_id").len().iter_rows())
    assert per_trial == dict(zip(trials["trial_id"], trials["epochs"]))
    assert history.select(["trial_id", "epoch"]).is_duplicated().sum() == 0

    # Start and finish: Tune's clock (whole seconds) spans the trial's time and brackets its reports.
    assert str(trials["started"].dtype) == str(trials["finished"].dtype) == "datetime64[ms, UTC]"
    spent = (trials["finished"] - trials["started"]).dt.total_seconds()
    assert np.allclose(spent, trials["seconds"], atol=1.5), pd.DataFrame({"spent": spent, "seconds": trials["seconds"]})
    times = trials.set_index("trial_id")
    reports = history.to_pandas().groupby("trial_id")["timestamp"].agg(["min", "max"]).reindex(times.index)  # same labels, same order
    assert (times["started"].map(pd.Timestamp.timestamp) <= reports["min"] + 1).all()
    assert (times["finished"].map(pd.Timestamp.timestamp) >= reports["max"] - 1).all()
    assert trials["finished"].is_monotonic_increasing, "trials.parquet lists trials in the order they finished"

    pareto = duckdb.sql(f"select * from '{run_dir / 'pareto.parquet'}'").df()
    assert list(pareto.columns) == PARETO_COLUMNS.names
    assert pareto["on_front"].any() and pareto["promoted"].sum() == 3
    promoted_rows = pareto[pareto["promoted"]].sort_values("promotion_order")
    assert promoted_rows["promotion_order"].tolist() == [1, 2, 3]
    assert promoted_rows["rank"].iloc[0] == 0 and promoted_rows["rank"].is_monotonic_increasing  # the front first
    assert (pareto["promotion_score"].notna() == pareto["on_front"]).all()

    hv = pd.read_parquet(run_dir / "hypervolume.parquet")
    assert list(hv.columns) == HYPERVOLUME_COLUMNS.names
    assert hv["hypervolume"].is_monotonic_increasing and 0 < hv["hypervolume"].iloc[-1] <= 1

    record = json.loads((run_dir / "run.json").read_text())
    assert record["spec"]["dataset"] == "mnist" and record["seed"] == 0
    assert {"torch", "ray", "optuna"} <= set(record["versions"])
    assert "params" in record["space"]

    promoted = promoted_rows["trial_id"].iloc[0]
    state = torch.load(run_dir / "checkpoints" / f"classifier-{promoted}.pt", weights_only=True)
    assert load_classifier(state)(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_pareto_command_prints_the_front_json_and_plot(smoke_search_run, tmp_path):
    run_dir = smoke_search_run.run_dir
    table = subprocess.run([*CLI, "pareto", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "Pareto front" in table.stdout and "★" in table.stdout and "Hypervolume" in table.stdout
    plot = tmp_path / "front.png"
    js = subprocess.run([*CLI, "pareto", str(run_dir), "--json", "--plot", str(plot)], capture_output=True, text=True, timeout=120)
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert data["trials"] == 4 and len(data["promoted"]) == 3 and len(data["hypervolume_history"]) == 4
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for suffix, header in ((".svg", b"<?xml"), (".pdf", b"%PDF")):  # the format the suffix names
        other = plot.with_suffix(suffix)
        assert subprocess.run([*CLI, "pareto", str(run_dir), "--plot", str(other)], capture_output=True, timeout=120).returncode == 0
        assert other.read_bytes().startswith(header), suffix


def test_pareto_and_show_read_a_run_on_s3_as_on_local_disk(smoke_search_run, s3_root):
    """The same run folder copied to an s3:// root reads back identically through the CLI."""
    run_dir = smoke_search_run.run_dir
    local = Location.of(run_dir)
    remote = Location.of(s3_root) / "copied" / "mnist" / "smoke"
    for file in local.files():
        (remote / file.relative_to(local)).write_bytes(file.read_bytes())
    fronts = {}
    for where in (local, remote):
        proc = subprocess.run([*CLI, "pareto", str(where), "--json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        fronts[where.scheme] = json.loads(proc.stdout)
        assert fronts[where.scheme].pop("run_dir") == str(where)
    assert fronts["s3"] == fronts[""]
    show = subprocess.run([*CLI, "show", str(remote), "--detail"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert show.returncode == 0, show.stderr
    assert str(remote) in show.stdout and "trials.parquet: 4 rows" in show.stdout
    assert "section 4.2 figure (probe decoder MAE against depth, latent size, sparsity): figures/probe-mae.png" in show.stdout
    summaries = {}
    for where in (local, remote):
        proc = subprocess.run([*CLI, "show", str(where), "--json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        summaries[where.scheme] = {k: v for k, v in json.loads(proc.stdout).items() if k not in ("run_dir", "report", "warnings")}
    assert summaries["s3"] == summaries[""] and summaries[""]["search"]["trials"] == 4
    page = subprocess.run([*CLI, "report", str(remote)], capture_output=True, text=True, timeout=120)
    assert page.returncode == 0, page.stderr
    assert (remote / "report.html").read_bytes().startswith(b"<!DOCTYPE html>")


def test_the_search_draws_its_figures(smoke_search_run):
    """figures/front.png, learning-curves.png, hypervolume.png and probe-mae.png, as PIL reads them."""
    import io

    from PIL import Image

    from regene_search.results import RunPaths

    paths = RunPaths(Location.of(smoke_search_run.run_dir))
    for figure in (paths.front_figure, paths.learning_curves_figure, paths.hypervolume_figure, paths.probe_mae_figure):
        with Image.open(io.BytesIO(figure.read_bytes())) as picture:
            assert picture.format == "PNG" and picture.width >= 700 and picture.height >= 400, figure
    assert "not written" not in (smoke_search_run.run_dir / "run.log").read_text()


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(mnist_small, ray_instance, tmp_path, capsys):
    from regene_search.config import BUDGETS, ProbeConfig
    from regene_search.search.space import load_space
    from regene_search.search.tuner import SearchSettings
    from regene_search.stages.search import Promotion, search_stage
    from regene_search.trial import TrialSetup

    space_file = tmp_path / "space.toml"
    space_file.write_text(
        "[params]\nlr = { choice = [1e12, 3e-3] }\n"
        "[fixed]\nblocks = 1\nbase_width = 8\nlatent_dim = 16\nepochs = 1\naugment = false\n"
    )
    paths = new_run_folder(tmp_path / "results", "mnist", "diverge")
    summary = search_stage(
        mnist_small.subset(train=512, val=128, seed=0),
        paths,
        space=load_space(space_file),
        settings=SearchSettings(trials=4, sampler="random", max_concurrent=2, seed=0),  # seed 0 draws both lrs
        setup=TrialSetup(probe=ProbeConfig(train_images=64, val_images=32, steps=2)),
        budget=BUDGETS["smoke"],
        promotion=Promotion(method="front"),
    )
    trials = pd.read_parquet(paths.trials)
    assert len(trials) == 4
    diverged = trials[trials["status"] == "DIVERGED"]
    completed = trials[trials["status"] == "COMPLETED"]
    assert len(diverged) >= 1 and len(completed) >= 1, trials[["param_lr", "status"]]
    assert (diverged["param_lr"] == 1e12).all()
    assert diverged["error"].str.contains("loss became").all()
    assert diverged["accuracy"].isna().all()
    pareto = pd.read_parquet(paths.pareto)
    assert (pareto.set_index("trial_id").loc[diverged["trial_id"], "rank"] == -1).all()
    assert summary.completed == len(completed) and summary.promoted
    # --promote front: every front trial, in knee order; the diverged ones never.
    assert (pareto["promoted"] == pareto["on_front"]).all()
    front = pareto[pareto["on_front"]].sort_values("promotion_order")
    assert front["promotion_order"].tolist() == list(range(1, len(front) + 1))
    assert front["promotion_score"].is_monotonic_increasing and front["trial_id"].tolist() == list(summary.promoted)
    assert pareto.loc[~pareto["on_front"], ["promotion_score", "promotion_order"]].isna().all().all()
    # The section 4.2 figure and the others of the search are written, a diverged trial and all.
    for figure in (paths.probe_mae_figure, paths.front_figure, paths.learning_curves_figure, paths.hypervolume_figure):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    assert "not written" not in capsys.readouterr().out  # plots.save_each's line for a figure that failed


def test_an_epoch_tune_never_uploaded_comes_from_the_checkpoint_history(tmp_path):
    """A driver killed right after a report: Tune's results lack that epoch, the trial's checkpoint has it."""
    from ray import tune

    from regene_search.search.tuner import HISTORY_FILE
    from regene_search.stages.search import epoch_records

    checkpoint = tmp_path / "trial" / "checkpoint_000003"
    checkpoint.mkdir(parents=True)
    saved = [{"epoch": e, "accuracy": 0.5 + e / 10, "timestamp": 100.0 + e} for e in (1, 2, 3)]
    (checkpoint / HISTORY_FILE).write_text(json.dumps(saved))
    frame = pd.DataFrame({"epoch": [1, 1, 3, None], "accuracy": [0.1, 0.61, 0.83, 0.0], "diverged": [False, False, False, True]})
    result = tune.Result(metrics={}, checkpoint=tune.Checkpoint(str(checkpoint)), error=None, path=str(tmp_path / "trial"), metrics_dataframe=frame)
    records = epoch_records(result, Location.of(tmp_path))
    assert sorted(records) == [1, 2, 3]
    assert [records[e]["accuracy"] for e in (1, 2, 3)] == [0.61, 0.7, 0.83]  # Tune's last report of an epoch wins; epoch 2 from the checkpoint
    (checkpoint / HISTORY_FILE).write_text("{damaged")
    assert sorted(epoch_records(result, Location.of(tmp_path))) == [1, 3]


PROGRESS_LINE = re.compile(r"^search (\d)/4 done, (\d) running \| best: accuracy (\S+)  decoder_mae (\S+)  latent_sparsity (\S+) \| HV (\S+) \| .* elapsed, ETA .*$")


def test_off_a_terminal_the_search_prints_progress_lines_and_the_run_log_keeps_every_line(smoke_search_run):
    """stdout was a pipe (as under Slurm or `| cat`): plain lines at a steady interval, each on its own line."""
    out = smoke_search_run.proc.stdout
    lines = [m for m in map(PROGRESS_LINE.match, out.splitlines()) if m]
    assert len(lines) >= 3, out[-3000:]
    assert lines[0].group(1) == "0" and lines[-1].group(1) == "4" and lines[-1].group(2) == "0"
    assert "\x1b[" not in out and "\r" not in out
    assert re.search(r"^search: 4/4 trials completed", out, re.M), "the summary starts its own line"
    trials = pd.read_parquet(smoke_search_run.run_dir / "trials.parquet")
    best = lines[-1].groups()[2:5]
    assert [float(v) for v in best] == pytest.approx([trials["accuracy"].max(), trials["decoder_mae"].min(), trials["latent_sparsity"].min()], abs=1e-4)

    log = (smoke_search_run.run_dir / "run.log").read_text().splitlines()
    logged = [line.split("  ", 1)[1] for line in log]
    assert logged[0].startswith("regene-search ") and " started: run mnist " in logged[0]
    assert any(line.startswith("data: mnist, ") for line in logged) and any(line.startswith("ray: ") for line in logged)
    assert f"run folder: {smoke_search_run.run_dir}" in logged
    assert sum(bool(PROGRESS_LINE.match(line)) for line in logged) >= 3
    assert any(line.startswith("search: 4/4 trials completed") for line in logged) and any(line.startswith("stage search done in") for line in logged)


def test_the_live_tables_have_the_final_tables_columns(smoke_search_run):
    live = smoke_search_run.live_tables
    assert set(live) == set(SEARCH_TABLES), "the live tables never showed up during the search"
    for name, data in live.items():
        table = pq.read_table(io.BytesIO(data))
        assert table.schema == TABLES[name], name
        assert set(table.column("run").to_pylist()) <= {"smoke"}, name
    trials = pq.read_table(io.BytesIO(live["trials.parquet"])).to_pandas()
    done = ~trials["status"].isin(["RUNNING", "PENDING"])
    assert trials["finished"].notna().eq(done).all(), trials[["trial_id", "status", "started", "finished"]]
    assert trials["started"].notna().eq(trials["epochs"] > 0).all() and trials["started"].notna().any()


def test_pareto_prints_the_live_front_while_the_search_runs(smoke_search_run):
    mid = smoke_search_run.mid_search
    assert mid is not None and smoke_search_run.still_searching, "the live tables never showed up during the search"
    assert mid.returncode == 0, mid.stderr
    assert "Pareto front" in mid.stdout and "on the front of" in mid.stdout
    assert "the search is still running: " in mid.stdout  # read at the first live write, minutes before the last trial ends


def test_the_estimate_timed_the_configurations_the_search_started_with(smoke_search_run):
    from regene_search.config import RunSpec, TrialConfig
    from regene_search.estimate import suggested_configs
    from regene_search.search.tuner import make_sampler

    spec = RunSpec.from_json(json.loads((smoke_search_run.run_dir / "run.json").read_text())["spec"])
    trials = pd.read_parquet(smoke_search_run.run_dir / "trials.parquet").sort_values("optuna_trial")
    ran = [TrialConfig.from_dict({k.removeprefix("param_"): v for k, v in row.items() if k.startswith("param_")}) for row in trials.to_dict("records")]
    startup = make_sampler(spec.sampler, seed=spec.seed, trials=spec.resolved_trials, startup_trials=spec.startup_trials)._n_startup_trials
    assert startup >= 2 and suggested_configs(spec, len(ran))[:startup] == ran[:startup]


def test_the_optuna_study_holds_every_trial_with_the_values_of_trials_parquet(smoke_search_run):
    run_dir = smoke_search_run.run_dir
    trials = pd.read_parquet(run_dir / "trials.parquet")
    study = optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))
    assert len(study.trials) == 4 and sorted(trials["optuna_trial"]) == [0, 1, 2, 3]
    for row in trials.itertuples():
        optuna_trial = study.trials[row.optuna_trial]
        assert optuna_trial.user_attrs["trial_id"] == row.trial_id
        assert optuna_trial.values == [row.accuracy, row.decoder_mae, row.latent_sparsity]
        assert optuna_trial.params["lr"] == pytest.approx(row.param_lr)
    assert study.metric_names == ["accuracy", "decoder_mae", "latent_sparsity"]


def test_optuna_dashboard_serves_the_study_on_loopback(smoke_search_run):
    run_dir = smoke_search_run.run_dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = [str(Path(sys.executable).parent / "optuna-dashboard")]  # the console script the README tells users to run
    server = subprocess.Popen([*dashboard, str(run_dir / "optuna.journal"), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        studies = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["smoke"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=30) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 4 and {t["state"] for t in detail["trials"]} == {"Complete"}
        assert detail["name"] == "smoke" and detail["objective_names"] == ["accuracy", "decoder_mae", "latent_sparsity"]
        assert detail["directions"] == ["maximize", "minimize", "minimize"] and len(detail["best_trials"]) >= 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlflow_gets_every_trial_and_the_search_headline(smoke_search_run):
    from mlflow import MlflowClient

    client = MlflowClient(smoke_search_run.mlflow_uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    stages = [r for r in runs if r.info.run_name == "stages"]
    trial_runs = [r for r in runs if r.info.run_name != "stages"]
    assert len(stages) == 1 and len(trial_runs) == 4
    trials = pd.read_parquet(smoke_search_run.run_dir / "trials.parquet")
    hv = pd.read_parquet(smoke_search_run.run_dir / "hypervolume.parquet")["hypervolume"].iloc[-1]
    assert stages[0].data.metrics["search.hypervolume"] == pytest.approx(hv) and stages[0].data.metrics["search.completed"] == 4
    assert sorted(r.data.metrics["accuracy"] for r in trial_runs) == pytest.approx(sorted(trials["accuracy"]))
    assert all("lr" in r.data.params for r in trial_runs)
    epochs = client.get_metric_history(trial_runs[0].info.run_id, "accuracy")
    assert len(epochs) == trials.loc[trials["accuracy"] == trial_runs[0].data.metrics["accuracy"], "epochs"].item()


def test_tensorboard_finds_an_event_file_per_trial_where_the_readme_points(smoke_search_run):
    """README: `tensorboard --logdir RUN/tune/search`."""
    trials = pd.read_parquet(smoke_search_run.run_dir / "trials.parquet")
    events = {p.parent.name for p in (smoke_search_run.run_dir / "tune" / "search").glob("*/events.out.tfevents.*")}
    assert events == set(trials["trial_id"])
