"""The whole ReGene run: the smoke search (--promote-top 3) continued with --resume through decoder, generate,
evaluate, which ranks the three encoders against the search scores (the "done when" of issue 13)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from regene_search.results import EVALUATION_COLUMNS, PROXY_COLUMNS, TABLES
from regene_search.stages.proxy import DOWNSTREAM, PROXIES

from .conftest import CLI, SHARED_DATA, needs_mnist
from .raycleanup import stop_ray_processes

# The first test sets up three continuations of the smoke run (failed, interrupted, finished): over 900 s on busy cores.
pytestmark = [pytest.mark.slow, needs_mnist, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def decoder_failed(smoke_search_run):
    """Continue the smoke search with a promoted encoder's checkpoint gone: the decoder stage fails.
    Returns (the run, `show` of it, stages.json); the checkpoint is back afterwards."""
    run_dir = smoke_search_run.run_dir
    checkpoint = run_dir / "checkpoints" / f"classifier-{first_promoted(run_dir)}.pt"
    aside = checkpoint.with_suffix(".aside")
    checkpoint.rename(aside)
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        proc = subprocess.run(
            [*CLI, "run", "--resume", str(run_dir), "--stages", "search,decoder", "--ray-temp-dir", ray_tmp],
            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "120"},
        )
        show = subprocess.run([*CLI, "show", str(run_dir)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    finally:
        aside.rename(checkpoint)
        stop_ray_processes(ray_tmp)
    return proc, show, json.loads((run_dir / "stages.json").read_text())


@pytest.fixture(scope="module")
def decoder_interrupted(smoke_search_run, decoder_failed, tmp_path_factory) -> tuple[int, str, dict]:
    """Continue the smoke search, press Ctrl-C (SIGINT) once the decoder stage has started: (exit code, output, stages.json)."""
    run_dir = smoke_search_run.run_dir
    log_path = tmp_path_factory.mktemp("logs") / "interrupted.log"
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*CLI, "run", "--resume", str(run_dir), "--stages", "search,decoder", "--ray-temp-dir", ray_tmp],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"},
        )
        try:
            deadline = time.monotonic() + 300
            while "stage decoder" not in log_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)  # into the neutral net's or the decoder's training
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)  # generous: the shared cores may be saturated
        finally:
            proc.kill()
            stop_ray_processes(ray_tmp)
    return proc.returncode, log_path.read_text(), json.loads((run_dir / "stages.json").read_text())


@pytest.fixture(scope="module")
def full_run(smoke_search_run, decoder_interrupted):
    """The smoke search continued to the end (after the Ctrl-C of `decoder_interrupted`)."""
    run_dir = smoke_search_run.run_dir
    before = (run_dir / "trials.parquet").stat().st_mtime_ns
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        proc = subprocess.run(
            [*CLI, "run", "--resume", str(run_dir), "--stages", "search,decoder,generate,evaluate", "--ray-temp-dir", ray_tmp],
            capture_output=True, text=True, timeout=1200, env={**os.environ, "COLUMNS": "120", "REGENE_SEARCH_ESTIMATE": "1"},
        )
    finally:
        stop_ray_processes(ray_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc, before


def test_a_run_estimates_the_stages_it_will_run_and_show_puts_them_beside_the_time(full_run):
    run_dir, proc, _ = full_run
    assert re.search(r"^estimate: about \S+ (min|s|h) on this machine", proc.stdout, re.M), proc.stdout[:3000]
    stages = json.loads((run_dir / "stages.json").read_text())
    for stage in ("decoder", "generate", "evaluate"):  # the stages this resume ran
        assert re.search(rf"^  {stage} ", proc.stdout, re.M), stage
        assert stages[stage]["estimated_seconds"] > 0 and stages[stage]["seconds"] > 0
    show = subprocess.run([*CLI, "show", str(run_dir)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert re.search(r"^stage\s+status\s+time\s+estimate", show.stdout, re.M), show.stdout


def test_stages_json_keeps_the_start_up_estimate_and_its_range_beside_the_later_one():
    from regene_search.estimate import StageEstimate
    from regene_search.pipeline import estimate_record

    start = StageEstimate("generate", 300.0, "4 strategies", 240.0, 360.0)
    assert estimate_record(start, start) == {"estimated_seconds": 300.0, "estimated_range_at_start": [240.0, 360.0]}
    promoted = StageEstimate("generate", 250.0, "4 strategies")
    assert estimate_record(promoted, start) == {"estimated_seconds": 250.0, "estimated_seconds_at_start": 300.0, "estimated_range_at_start": [240.0, 360.0]}
    assert estimate_record(StageEstimate("search", 90.0, "4 trials"), None) == {"estimated_seconds": 90.0}
    assert estimate_record(None, None) == {}


def test_ctrl_c_in_the_decoder_stage_exits_130_and_leaves_it_to_resume(decoder_interrupted, full_run):
    code, output, stages = decoder_interrupted
    _, proc, _ = full_run
    assert code == 130, output[-3000:]
    assert "SIGINT stopped stage decoder; continue with: regene-search run --resume" in output and "Traceback" not in output
    assert stages["search"]["status"] == "done"
    assert stages["decoder"] == {**stages["decoder"], "status": "interrupted", "reason": "stopped by SIGINT"}
    assert "stage decoder done" in proc.stdout  # the resume redid it


def test_a_stage_that_fails_is_recorded_and_shown_and_resume_continues_from_it(smoke_search_run, decoder_failed, full_run):
    proc, show, stages = decoder_failed
    ours = [line for line in proc.stderr.splitlines() if line.startswith("regene-search")]  # not Ray's own warnings
    assert proc.returncode == 2 and len(ours) == 1 and "is missing: rerun the search stage" in ours[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert stages["decoder"]["status"] == "failed" and "RunDirError: " in stages["decoder"]["reason"]
    assert re.search(r"decoder\s+failed\s+\S+\s+RunDirError", show.stdout), show.stdout
    assert "! stage decoder is failed: RunDirError: " in show.stdout and "continue with: regene-search run --resume" in show.stdout
    log = (smoke_search_run.run_dir / "run.log").read_text()
    assert re.search(r"stage decoder failed after [\d.]+ s: RunDirError: .* is missing: rerun the search stage; continue with: regene-search run --resume ", log)
    assert "stage decoder done" in full_run[1].stdout


def test_every_training_reports_each_epoch_to_the_terminal_and_the_run_log(smoke_search_run, full_run):
    _, proc, _ = full_run
    epochs = json.loads((smoke_search_run.run_dir / "run.json").read_text())["budget"]["decoder_epochs"]
    for epoch in range(1, epochs + 1):
        assert re.search(rf"^decoder \w+: epoch {epoch}/{epochs}  loss \S+  val MAE \S+  val SSIM \S+  [\d.]+ s$", proc.stdout, re.M), proc.stdout[-3000:]
    log = (smoke_search_run.run_dir / "run.log").read_text()
    assert re.search(rf"  decoder \w+: epoch {epochs}/{epochs}  loss ", log) and re.search(r"  neutral: epoch 1/\d+  train loss ", log)
    assert log.count(" resumed: run --resume ") >= 3  # failed, interrupted and full continuation


def test_resume_skips_the_finished_search(full_run):
    run_dir, proc, before = full_run
    assert "stage search: already done, skipped" in proc.stdout
    assert (run_dir / "trials.parquet").stat().st_mtime_ns == before
    stages = json.loads((run_dir / "stages.json").read_text())
    assert all(stages[s]["status"] == "done" for s in ("search", "decoder", "generate", "evaluate"))


def test_every_table_has_its_documented_schema_and_names_its_run(full_run):
    run_dir, _, _ = full_run
    for name, schema in TABLES.items():  # the schemas docs/results.md documents (tests/test_docs_schemas.py)
        if name == "lsdm.parquet":  # this run generates by convex combinations only: no LSDM generator
            assert not (run_dir / name).exists()
            continue
        assert pq.read_schema(run_dir / name) == schema, name
        assert set(pq.read_table(run_dir / name, columns=["run"]).column("run").to_pylist()) == {"smoke"}, name
    assert pq.read_schema(run_dir / "evaluation.parquet").metadata == EVALUATION_COLUMNS.metadata  # n, class: pandas Int64


def first_promoted(run_dir) -> str:
    pareto = pd.read_parquet(run_dir / "pareto.parquet")
    return pareto.loc[pareto["promotion_order"] == 1, "trial_id"].item()


def test_generations_pass_the_papers_bar_on_the_neutral_classifier(full_run):
    run_dir, _, _ = full_run
    knee = first_promoted(run_dir)
    evaluation = pd.read_parquet(run_dir / "evaluation.parquet")
    overall = evaluation[(evaluation["metric"] == "neutral_acc_gen") & (evaluation["scope"] == "run") & (evaluation["subset"] == "accepted")]
    assert len(overall) == 3 and overall.loc[overall["trial_id"] == knee, "value"].item() >= 0.9
    fids = set(evaluation["metric"])
    assert {"fid_neutral_org_gen", "fid_neutral_org_recon", "fid_neutral_recon_gen"} <= fids
    generations = pd.read_parquet(run_dir / "generations.parquet")
    assert set(generations["n"]) == {2, 3, 5} and generations.loc[generations["trial_id"] == knee, "accepted"].mean() > 0.5
    decoder = pd.read_parquet(run_dir / "decoder.parquet")
    assert decoder["perceptual_backbone"].notna().all()


def test_three_promoted_encoders_are_ranked_against_the_search_scores(full_run):
    run_dir, proc, _ = full_run
    proxy = pd.read_parquet(run_dir / "proxy.parquet")
    assert list(proxy.columns) == PROXY_COLUMNS.names
    assert set(proxy["proxy"]) == set(PROXIES) and set(proxy["downstream"]) == set(DOWNSTREAM)  # coverage too: the evaluate stage computes it
    pareto = pd.read_parquet(run_dir / "pareto.parquet")
    order = pareto[pareto["promoted"]].sort_values("promotion_order")["trial_id"].tolist()
    mae = proxy[(proxy["proxy"] == "decoder_mae") & (proxy["downstream"] == "decoder_val_mae")].iloc[0]
    assert mae["k"] == 3 and list(mae["trial_ids"]) == order
    # Recompute from the files: the probe's MAE against the full decoder's last-epoch MAE (both lower-is-better).
    decoder = pd.read_parquet(run_dir / "decoder.parquet").sort_values("epoch").groupby("trial_id").last()
    expected = stats.kendalltau(pareto.set_index("trial_id").loc[order, "decoder_mae"], decoder.loc[order, "val_mae"]).statistic
    assert mae["kendall_tau"] == pytest.approx(expected) and mae["orientation"] == 1
    assert "rank agreement, decoder_mae: " in proc.stdout


def test_show_summarises_the_run_in_one_screen(full_run):
    run_dir, _, _ = full_run
    proc = subprocess.run([*CLI, "show", str(run_dir)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 50, proc.stdout  # one screen
    assert lines[0].startswith("smoke  mnist · budget smoke · seed 0")
    for stage in ("search", "decoder", "generate", "evaluate"):
        assert re.search(rf"^{stage}\s+done\s", proc.stdout, re.M), stage
    promoted = json.loads(subprocess.run([*CLI, "pareto", str(run_dir), "--json"], capture_output=True, text=True, timeout=120).stdout)["promoted"]
    for trial in promoted:
        assert f"promoted {trial}" in proc.stdout and f"{trial}: generations" in proc.stdout
    assert re.search(r"^neutral accuracy on generations(\s+[\d.]+ [✓✗]){4}$", proc.stdout, re.M), proc.stdout
    assert re.search(r"judge: neutral ResNet-8 \(quick recipe\), test accuracy 0\.\d{3}", proc.stdout), proc.stdout
    assert "report.html" in proc.stdout and "rank agreement" in proc.stdout


def test_show_detail_dumps_every_stage_and_lists_figures(full_run):
    run_dir, _, _ = full_run
    proc = subprocess.run([*CLI, "show", str(run_dir), "--detail"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for stage in ("search", "decoder", "generate", "evaluate"):
        assert stage in proc.stdout
    assert "hypervolume=" in proc.stdout and "neutral_acc_gen=" in proc.stdout
    assert "generations-n2.png" in proc.stdout and "figures/probe-mae.png" in proc.stdout
    assert "rank agreement over K=3 promoted encoders" in proc.stdout
    for objective in ("accuracy", "decoder_mae", "latent_sparsity", "joint_score", "promotion_order"):
        assert f"  {objective}: " in proc.stdout


def test_every_stage_draws_its_figures(full_run):
    """The figures people look at first, for the run and for each of the three promoted encoders."""
    from PIL import Image

    from regene_search.results import RunPaths
    from regene_search.storage import Location

    run_dir, _, _ = full_run
    paths = RunPaths(Location.of(run_dir))
    promoted = pd.read_parquet(run_dir / "pareto.parquet").query("promoted")["trial_id"].tolist()
    figures = [paths.front_figure, paths.learning_curves_figure, paths.hypervolume_figure, paths.probe_mae_figure, paths.decoder_curves_figure]
    for trial in promoted:
        figures += [paths.reconstructions_figure(trial), paths.acceptance_figure(trial), paths.filter_scatter_figure(trial), paths.rejected_figure(trial)]
    assert len(promoted) == 3 and len(figures) == 17
    for figure in figures:
        with Image.open(figure) as picture:
            assert picture.format == "PNG" and picture.width >= 100 and picture.height >= 100, figure
    assert "not written" not in (run_dir / "run.log").read_text()  # plots.save_each's line for a figure that failed


def test_resuming_a_finished_run_does_nothing(full_run):
    run_dir, _, _ = full_run
    mtimes = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")}
    proc = subprocess.run([*CLI, "run", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")} == mtimes


def test_every_run_writes_a_report_that_chromium_renders_with_every_image(full_run, tmp_path):
    from regene_search.storage import Location

    from .browser import check_page

    run_dir, proc, _ = full_run
    page = run_dir / "report.html"
    assert page.exists() and page.stat().st_mtime >= (run_dir / "evaluation.parquet").stat().st_mtime  # written at the run's end
    check = check_page(page)
    root = Location.of(run_dir)
    figures = [f for f in root.files() if f.relative_to(root).startswith("figures/") and f.name.endswith(".png")]
    assert check.images == len(figures) >= 10 and check.broken_images == []
    assert check.console_errors == [] and check.page_errors == [] and check.requests == []
    for heading in ("Stages", "Search", "Promoted encoder", "Generations against the paper's bar", "By class, weakest first", "Evaluation"):
        assert heading in check.text, heading
    (tmp_path / "report.png").write_bytes(check.screenshot)


def test_every_generation_strategy_through_the_cli_is_judged_by_every_metric(smoke_search_run):
    """The smallest whole run with every strategy: one smoke trial, one n, 12 convex combinations per class
    (so 12 samples per class of each sampled strategy). It shares the smoke run's results root, so the
    neutral classifier comes from the cache when the pipeline tests have trained it."""
    from regene_search.config import GENERATORS

    results = smoke_search_run.run_dir.parent.parent
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        proc = subprocess.run(
            [*CLI, "run", "mnist", "--data-dir", str(SHARED_DATA), "--budget", "smoke",
             "--trials", "1", "--generate-n", "2", "--generate-per-class", "12", "--generators", ",".join(GENERATORS),
             "--results", str(results), "--name", "strategies", "--ray-temp-dir", ray_tmp],
            capture_output=True, text=True, timeout=1500, env={**os.environ, "COLUMNS": "200"},
        )
    finally:
        stop_ray_processes(ray_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = results / "mnist" / "strategies"
    evaluation = pd.read_parquet(run_dir / "evaluation.parquet")
    judged = {"neutral_acc_gen", "fid_neutral_org_gen", "fid_neutral_recon_gen", "kid_neutral_org_gen", "precision", "recall", "density", "coverage"}
    for strategy in GENERATORS:
        mine = evaluation[(evaluation["strategy"] == strategy) & (evaluation["scope"] == "run")]
        for subset in ("accepted", "all"):
            assert judged <= set(mine.loc[mine["subset"] == subset, "metric"]), (strategy, subset)
        assert set(mine.loc[mine["subset"].isna(), "metric"]) == {"accept_rate", "accepted_count"}
    # The third FID, test images vs reconstructions, is the encoder's (no strategy).
    assert "fid_neutral_org_recon" in set(evaluation.loc[evaluation["strategy"].isna() & (evaluation["scope"] == "run"), "metric"])
    # lr-livae's own decoder trained in the decoder stage beside ReGene's, every epoch a row.
    decoders = pd.read_parquet(run_dir / "decoder.parquet")
    assert decoders.groupby("decoder")["epoch"].apply(list).to_dict() == {kind: list(range(1, 5)) for kind in ("lr-livae", "regene")}
    assert len(list((run_dir / "checkpoints").glob("lr-livae-decoder-*.pt"))) == 1
    generations = pd.read_parquet(run_dir / "generations.parquet")
    assert generations.groupby("strategy").size().to_dict() == {s: 120 for s in GENERATORS}
    assert len(pd.read_parquet(run_dir / "lsdm.parquet")) >= 5
    figures = {p.name for p in (run_dir / "figures").rglob("generations-*.png")}
    assert "generations-n2.png" in figures and {f"generations-{s}.png" for s in GENERATORS if s != "convex"} <= figures
    show = subprocess.run([*CLI, "show", str(run_dir)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert re.search(rf"^neutral accuracy on accepted generations(\s+[\d.]+ [✓✗]){{{len(GENERATORS)}}}$", show.stdout, re.M), show.stdout


def test_sigterm_stops_a_driver_that_ignores_sigint():
    """A driver started in the background (`cmd &`, nohup, a batch script) ignores SIGINT; SIGTERM,
    which takes Ctrl-C's path, must still stop it (it used to re-raise as the ignored SIGINT)."""
    script = (
        "import os, signal, sys, time\n"
        "from regene_search.pipeline import sigterm_as_ctrl_c\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "with sigterm_as_ctrl_c() as received:\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "    except KeyboardInterrupt:\n"
        "        sys.exit(0 if received == [signal.SIGTERM] else 3)\n"
        "sys.exit(4)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stderr[-2000:]
