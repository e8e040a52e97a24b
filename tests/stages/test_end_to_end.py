"""decoder -> generate -> evaluate with a real in-process Ray and real MNIST, on an s3:// results root
(a real S3 endpoint on loopback), so every file the stages read and write goes through `pyarrow.fs`."""

from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import ray
import torch
import torchvision
from PIL import Image
from rich.console import Console

from regene_search.config import BUDGETS, Budget, RunSpec
from regene_search.figures import decode_png
from regene_search.results import (
    DECODER_COLUMNS,
    EVALUATION_COLUMNS,
    EVALUATION_SCOPES,
    GENERATION_COLUMNS,
    PARETO_COLUMNS,
    RunPaths,
    read_parquet,
    write_bytes,
)
from regene_search.runtime import load_checkpoint
from regene_search.stages.context import StageContext
from regene_search.stages.decoder import decoder_stage, load_decoder
from regene_search.stages.evaluate import evaluate_stage
from regene_search.stages.generate import generate_stage

from ..conftest import needs_mnist, new_run_folder
from ..raycleanup import stop_ray_processes

TRIAL = "tiny_00000"
TINY_BUDGET = Budget(name="tiny", train_images=None, val_images=None, max_epochs=1, trials=1, decoder_epochs=2, neutral_epochs=1)


@dataclass(frozen=True)
class StageSpec(RunSpec):
    """RunSpec plus the stage fields the stages read with getattr (small values for speed)."""

    neutral_depth: int | None = 8
    generate_n: tuple[int, ...] = (2, 3)
    generate_per_class: int = 6
    novelty_samples: int = 32
    inception_weights: str | None = None
    inception_images: int = 8


def promote_encoder(paths: RunPaths, checkpoint: dict) -> None:
    """What the search stage leaves behind: pareto.parquet with one promoted trial and its checkpoint."""
    row = {"trial_id": TRIAL, "accuracy": 0.9, "decoder_mae": 0.1, "latent_sparsity": 0.3, "joint_score": 0.6, "rank": 0, "crowding": 1.0, "on_front": True, "promoted": True}
    paths.write_table([row], PARETO_COLUMNS, paths.pareto)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_bytes(buffer.getvalue(), paths.checkpoints / f"classifier-{TRIAL}.pt")


@pytest.fixture(scope="module")
def stage_run(mnist_2k, encoder_checkpoint, tmp_path_factory, s3_root):
    root = f"{s3_root}/stages"
    paths = new_run_folder(root, "mnist", "t")
    promote_encoder(paths, encoder_checkpoint)
    # Randomly initialised Inception weights exercise the real loading and feature path.
    inception = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), inception)
    spec = StageSpec(
        dataset="mnist", data_dir=None, budget="tiny", name="t", results_root=root, space_path="unused.toml", seed=3, inception_weights=str(inception)
    )
    ctx = StageContext(paths=paths, spec=spec, data=mnist_2k, console=Console(quiet=True))
    ray_dir = tempfile.mkdtemp(prefix="rs-st-", dir="/tmp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BUDGETS, "tiny", TINY_BUDGET)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_dir, logging_level="WARNING")
        try:
            summaries = {"decoder": decoder_stage(ctx), "generate": generate_stage(ctx), "evaluate": evaluate_stage(ctx)}
        finally:
            ray.shutdown()
            stop_ray_processes(ray_dir)
            shutil.rmtree(ray_dir, ignore_errors=True)
            torch.set_num_threads(threads)
    return paths, summaries, root


pytestmark = needs_mnist


def test_decoder_writes_a_loadable_checkpoint_and_one_row_per_epoch(stage_run):
    paths, summaries, _ = stage_run
    table = read_parquet(paths.decoder)
    assert table.schema.names == DECODER_COLUMNS.names and table.schema == DECODER_COLUMNS
    rows = table.to_pylist()
    assert {r["run"] for r in rows} == {"t"}
    assert [(r["trial_id"], r["epoch"]) for r in rows] == [(TRIAL, 1), (TRIAL, 2)]
    assert {r["perceptual_backbone"] for r in rows} == {"neutral-resnet"} == {summaries["decoder"]["perceptual_backbone"]}
    assert rows[0]["w_ssim"] > rows[1]["w_ssim"] and rows[0]["w_mae"] == rows[1]["w_mae"]
    assert 0 < rows[-1]["val_mae"] < 0.2 and 0 < rows[-1]["val_ssim"] <= 1
    state = load_checkpoint(paths.checkpoints / f"decoder-{TRIAL}.pt", "decoder stage")
    assert state["encoder_trial_id"] == TRIAL and state["perceptual_backbone"] == "neutral-resnet"
    assert load_decoder(state)(torch.zeros(2, 64)).shape == (2, 1, 28, 28)


def test_generations_hold_every_combination_with_valid_weights_and_pngs(stage_run, mnist_2k):
    paths, summaries, _ = stage_run
    table = read_parquet(paths.generations)
    assert table.schema == GENERATION_COLUMNS
    rows = table.to_pylist()
    assert len(rows) == 10 * 2 * 6 and {r["run"] for r in rows} == {"t"}
    for r in rows:
        assert len(r["source_indices"]) == len(r["weights"]) == r["n"]
        assert len(set(r["source_indices"])) == r["n"]
        assert all(int(mnist_2k.train_y[i]) == r["class"] for i in r["source_indices"])
        assert r["weights"] == pytest.approx([1 / r["n"]] * r["n"])
        assert r["accepted"] == (r["latent_confidence"] >= r["threshold"] and r["image_confidence"] >= r["threshold"])
        assert r["class_name"] == str(r["class"])
    assert decode_png(rows[0]["image_png"], 1).shape == (1, 28, 28)
    generated = summaries["generate"]["trials"][TRIAL]
    assert generated["generated"] == len(rows) and generated["accepted"] == sum(r["accepted"] for r in rows)
    assert 0 < generated["accept_rate"] <= 1 and set(generated["accept_rate_by_n"]) == {"2", "3"}


def test_figures_are_pngs_in_the_run_folder(stage_run):
    paths, summaries, _ = stage_run
    assert str(paths.dir).startswith("s3://")
    figures = (paths.figures / TRIAL).files()
    names = {p.name for p in figures}
    assert {"generations-n2.png", "generations-n3.png", "novelty.png"} <= names
    assert {"reconstructions.png", "acceptance.png", "filter-scatter.png", "rejected.png"} <= names
    assert {f"figures/{TRIAL}/{name}" for name in ("acceptance.png", "filter-scatter.png", "rejected.png")} <= set(summaries["generate"]["trials"][TRIAL]["figures"])
    with Image.open(io.BytesIO(paths.reconstructions_figure(TRIAL).read_bytes())) as picture:  # test images above their reconstructions
        assert picture.height == 2 + 2 * (56 + 2) and picture.width > 10 * (56 + 2)
    assert paths.decoder_curves_figure.read_bytes().startswith(b"\x89PNG")
    assert {f"interpolation-{c}.png" for c in range(10)} <= names
    assert all((paths.dir / f).is_file() for f in summaries["generate"]["trials"][TRIAL]["figures"])
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures)
    assert not [p for p in paths.dir.files() if p.name.endswith(".tmp")]


def test_evaluation_has_the_documented_metrics(stage_run):
    paths, summaries, root = stage_run
    table = read_parquet(paths.evaluation)
    assert table.schema == EVALUATION_COLUMNS
    rows = table.to_pylist()
    metrics = {r["metric"] for r in rows}
    assert {
        "neutral_test_accuracy", "accept_rate", "accepted_count", "neutral_acc_gen", "neutral_acc_recon", "recon_mae", "recon_ssim",
        "fid_neutral_org_gen", "fid_neutral_org_recon", "fid_neutral_recon_gen",
        "novelty_nn_l2_mean", "novelty_nn_ssim_mean", "novelty_test_nn_l2_mean", "novelty_test_nn_ssim_mean",
    } <= metrics
    assert {"fid_inception_org_gen", "fid_inception_org_recon", "fid_inception_recon_gen"} <= metrics
    assert summaries["evaluate"]["inception"] is True
    assert {r["dataset"] for r in rows} == {"mnist"}
    assert {r["run"] for r in rows} == {"t"}
    scopes = {"run": (False, False), "n": (True, False), "class": (False, True), "n_class": (True, True)}
    assert {r["scope"] for r in rows} == set(EVALUATION_SCOPES) == set(scopes)
    assert all(scopes[r["scope"]] == (r["n"] is not None, r["class"] is not None) for r in rows)
    frame = pd.read_parquet(io.BytesIO(paths.evaluation.read_bytes()))  # plain pandas, no hints
    assert frame["n"].dtype == "Int64" and frame["class"].dtype == "Int64"
    assert frame.pivot_table(index="scope", columns="metric", values="value", aggfunc="size").sum().sum() == len(frame)  # no row dropped
    by_key = {(r["metric"], r["n"], r["class"]): r for r in rows}
    assert by_key[("neutral_test_accuracy", None, None)]["trial_id"] is None
    # One epoch on 2000 images trains the neutral ResNet too briefly to assert its accuracy here.
    assert by_key[("neutral_test_accuracy", None, None)]["value"] == pytest.approx(summaries["evaluate"]["neutral"]["test_accuracy"])
    assert ("accept_rate", 2, 0) in by_key and ("fid_neutral_org_gen", 3, None) in by_key
    for name in ("fid_neutral_org_gen", "fid_neutral_org_recon", "fid_neutral_recon_gen"):
        assert np.isfinite(by_key[(name, None, None)]["value"]) and by_key[(name, None, None)]["value"] >= 0
    assert 0 < by_key[("novelty_nn_l2_mean", None, None)]["value"]
    # The neutral classifier trained for the decoder's perceptual loss is reused from the cache.
    neutral = summaries["evaluate"]["neutral"]
    assert neutral["from_cache"] and neutral["depth"] == 8
    assert neutral["checkpoint"].startswith("s3://regene-test/results/stages/mnist/_neutral/neutral-")


def test_one_promoted_encoder_gets_no_rank_agreement_and_the_reason(stage_run):
    paths, summaries, _ = stage_run
    assert not paths.proxy.exists()
    proxy = summaries["evaluate"]["proxy"]
    assert proxy["k"] == 1 and not proxy["written"] and "needs >= 3" in proxy["reason"]
