"""The whole ReGene run: the smoke search continued with --resume through decoder, generate, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import pandas as pd
import pytest

from .conftest import CLI, needs_mnist
from .raycleanup import stop_ray_processes

pytestmark = [pytest.mark.slow, needs_mnist]


@pytest.fixture(scope="module")
def full_run(smoke_search_run):
    run_dir, _, _ = smoke_search_run
    before = (run_dir / "trials.parquet").stat().st_mtime_ns
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        proc = subprocess.run(
            [*CLI, "run", "--resume", str(run_dir), "--stages", "search,decoder,generate,evaluate", "--ray-temp-dir", ray_tmp],
            capture_output=True, text=True, timeout=1200, env={**os.environ, "COLUMNS": "120"},
        )
    finally:
        stop_ray_processes(ray_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc, before


def test_resume_skips_the_finished_search(full_run):
    run_dir, proc, before = full_run
    assert "stage search: already done, skipped" in proc.stdout
    assert (run_dir / "trials.parquet").stat().st_mtime_ns == before
    stages = json.loads((run_dir / "stages.json").read_text())
    assert all(stages[s]["status"] == "done" for s in ("search", "decoder", "generate", "evaluate"))


def test_generations_pass_the_papers_bar_on_the_neutral_classifier(full_run):
    run_dir, _, _ = full_run
    evaluation = pd.read_parquet(run_dir / "evaluation.parquet")
    overall = evaluation[(evaluation["metric"] == "neutral_acc_gen") & evaluation["n"].isna() & evaluation["class"].isna()]
    assert len(overall) == 1 and overall["value"].iloc[0] >= 0.9
    fids = set(evaluation["metric"])
    assert {"fid_neutral_org_gen", "fid_neutral_org_recon", "fid_neutral_recon_gen"} <= fids
    generations = pd.read_parquet(run_dir / "generations.parquet")
    assert set(generations["n"]) == {2, 3, 5} and generations["accepted"].mean() > 0.5
    decoder = pd.read_parquet(run_dir / "decoder.parquet")
    assert decoder["perceptual_backbone"].notna().all()


def test_show_summarises_every_stage_and_lists_figures(full_run):
    run_dir, _, _ = full_run
    proc = subprocess.run([*CLI, "show", str(run_dir)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for stage in ("search", "decoder", "generate", "evaluate"):
        assert stage in proc.stdout
    assert "hypervolume=" in proc.stdout and "neutral_acc_gen=" in proc.stdout
    assert "generations-n2.png" in proc.stdout


def test_resuming_a_finished_run_does_nothing(full_run):
    run_dir, _, _ = full_run
    mtimes = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")}
    proc = subprocess.run([*CLI, "run", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")} == mtimes
