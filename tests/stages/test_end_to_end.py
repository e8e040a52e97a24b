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
    LSDM_TABLE_COLUMNS,
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
TINY_BUDGET = Budget(name="tiny", train_images=None, val_images=None, max_epochs=1, trials=1, decoder_epochs=2, neutral_epochs=1, lsdm_steps=40)


@dataclass(frozen=True)
class StageSpec(RunSpec):
    """RunSpec plus the stage fields the stages read with getattr (small values for speed)."""

    neutral_depth: int | None = 8
    generate_n: tuple[int, ...] = (2, 3)
    generate_per_class: int = 6
    generators: tuple[str, ...] = ("convex", "gaussian", "lsdm", "lr-livae")
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
    every = table.to_pylist()
    assert {r["run"] for r in every} == {"t"}
    # lr-livae is among the generators: both decoders, each a Ray task, their rows in one table.
    assert [(r["trial_id"], r["decoder"], r["epoch"]) for r in every] == [(TRIAL, "regene", 1), (TRIAL, "regene", 2), (TRIAL, "lr-livae", 1), (TRIAL, "lr-livae", 2)]
    assert {r["perceptual_backbone"] for r in every} == {"neutral-resnet"} == {summaries["decoder"]["perceptual_backbone"]}
    for kind in ("regene", "lr-livae"):
        rows = [r for r in every if r["decoder"] == kind]
        assert rows[0]["w_ssim"] > rows[1]["w_ssim"] and rows[0]["w_mae"] == rows[1]["w_mae"] and rows[0]["w_perceptual"] > 0
        assert 0 < rows[-1]["val_mae"] < 0.2 and 0 < rows[-1]["val_ssim"] <= 1
        assert rows[-1]["loss_kl"] > 0 if kind == "lr-livae" else rows[-1]["loss_kl"] is None  # ReGene's decoder has no KL
    regene, lr = ([r for r in every if r["decoder"] == kind] for kind in ("regene", "lr-livae"))
    assert [(r["w_mae"], r["w_ssim"], r["w_perceptual"]) for r in regene] == [(r["w_mae"], r["w_ssim"], r["w_perceptual"]) for r in lr]
    assert summaries["decoder"]["kinds"] == ["regene", "lr-livae"]
    assert summaries["decoder"]["decoders"][TRIAL]["lr-livae"]["val_mae"] == lr[-1]["val_mae"]
    state = load_checkpoint(paths.checkpoints / f"decoder-{TRIAL}.pt", "decoder stage")
    assert state["encoder_trial_id"] == TRIAL and state["perceptual_backbone"] == "neutral-resnet"
    assert load_decoder(state)(torch.zeros(2, 64)).shape == (2, 1, 28, 28)
    state = load_checkpoint(paths.checkpoints / f"lr-livae-decoder-{TRIAL}.pt", "decoder stage")
    assert state["decoder"] == "lr-livae" and state["encoder_trial_id"] == TRIAL and set(state["nuisance_encoder"])
    assert load_decoder(state)(torch.zeros(2, 64 + state["u_dim"])).shape == (2, 1, 28, 28)


def test_generations_hold_every_combination_with_valid_weights_and_pngs(stage_run, mnist_2k):
    paths, summaries, _ = stage_run
    table = read_parquet(paths.generations)
    assert table.schema == GENERATION_COLUMNS
    every = table.to_pylist()
    assert [r["strategy"] for r in every] == ["convex"] * 120 + ["gaussian"] * 120 + ["lsdm"] * 120 + ["lr-livae"] * 120
    rows = [r for r in every if r["strategy"] == "convex"]
    assert len(rows) == 10 * 2 * 6 and {r["run"] for r in every} == {"t"}
    for r in every:
        assert r["accepted"] == (r["latent_confidence"] >= r["threshold"] and r["image_confidence"] >= r["image_threshold"])
    for strategy in ("gaussian", "lsdm", "lr-livae"):  # sampled: as many per class as convex over its n, no n, sources or weights
        mine = [r for r in every if r["strategy"] == strategy]
        assert [r["class"] for r in mine] == [c for c in range(10) for _ in range(12)]
        assert all(r["n"] is None and r["source_indices"] is None and r["weights"] is None for r in mine)
        assert {(r["class"], r["threshold"]) for r in mine} == {(r["class"], r["threshold"]) for r in rows}  # the same class thresholds
        # ... and the same image-step thresholds where the same decoder decodes (the confidence on its
        # reconstructions); lr-livae's are its own decoder's.
        same_decoder = {(r["class"], r["image_threshold"]) for r in mine} == {(r["class"], r["image_threshold"]) for r in rows}
        assert same_decoder == (strategy != "lr-livae")
        if strategy in ("gaussian", "lr-livae"):  # a fitted model of each digit's latents gets most samples past the head (LSDM: 40 steps, untrained)
            assert sum(r["latent_confidence"] > 0.5 for r in mine) > len(mine) / 2
        info = summaries["generate"]["trials"][TRIAL]["strategies"][strategy]
        assert info["generated"] == 120 and info["accepted"] == sum(r["accepted"] for r in mine) and info["accept_rate_by_n"] == {}
    for r in rows:
        assert len(r["source_indices"]) == len(r["weights"]) == r["n"]
        assert len(set(r["source_indices"])) == r["n"]
        assert all(int(mnist_2k.train_y[i]) == r["class"] for i in r["source_indices"])
        assert r["weights"] == pytest.approx([1 / r["n"]] * r["n"])
        assert r["accepted"] == (r["latent_confidence"] >= r["threshold"] and r["image_confidence"] >= r["image_threshold"])
        assert r["class_name"] == str(r["class"])
    assert decode_png(rows[0]["image_png"], 1).shape == (1, 28, 28)
    generated = summaries["generate"]["trials"][TRIAL]
    assert generated["generated"] == len(every) and generated["accepted"] == sum(r["accepted"] for r in every)
    convex = generated["strategies"]["convex"]
    assert convex["generated"] == len(rows) and convex["accepted"] == sum(r["accepted"] for r in rows)
    assert 0 < convex["accept_rate"] <= 1 and set(convex["accept_rate_by_n"]) == {"2", "3"}
    by_class = {r["class"]: (r["threshold"], r["image_threshold"]) for r in rows}
    assert [by_class[c] for c in range(10)] == list(zip(generated["thresholds"], generated["image_thresholds"]))
    assert any(image != latent for latent, image in by_class.values())  # the reconstructions' confidence, not the holdout images'


def test_lsdm_trains_on_ray_and_its_loss_rows_land_in_parquet(stage_run):
    paths, summaries, _ = stage_run
    table = read_parquet(paths.lsdm)
    assert table.schema == LSDM_TABLE_COLUMNS
    rows = table.to_pylist()
    assert [(r["trial_id"], r["step"]) for r in rows] == [(TRIAL, s) for s in (8, 16, 24, 32, 40)]
    assert all(r["gradient_penalty"] >= 0 and r["seconds"] > 0 for r in rows)
    assert summaries["generate"]["lsdm_steps"] == 40
    state = load_checkpoint(paths.lsdm_checkpoint(TRIAL), "generate stage")
    assert state["format"] == "regene-search/lsdm-v1" and state["settings"]["steps"] == 40


def test_figures_are_pngs_in_the_run_folder(stage_run):
    paths, summaries, _ = stage_run
    assert str(paths.dir).startswith("s3://")
    figures = (paths.figures / TRIAL).files()
    names = {p.name for p in figures}
    assert {"generations-n2.png", "generations-n3.png", "generations-gaussian.png", "novelty.png"} <= names
    # A strategy's grid holds its accepted generations: none (the 40-step LSDM may get none past the filter), no grid.
    drawn = {s for s in ("gaussian", "lsdm", "lr-livae") if summaries["generate"]["trials"][TRIAL]["strategies"][s]["accepted"]}
    assert {f"figures/{TRIAL}/generations-{s}.png" for s in drawn} == {f for f in summaries["generate"]["trials"][TRIAL]["figures"] if f.endswith(("gaussian.png", "lsdm.png", "lr-livae.png"))}
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
    assert {r["strategy"] for r in rows} == {None, "convex", "gaussian", "lsdm", "lr-livae"} and {r["subset"] for r in rows} == {None, "accepted", "all"}
    # Every strategy, after the filter and before it: neutral accuracy, the FIDs, KID, precision, recall, density, coverage.
    judged = {"neutral_acc_gen", "fid_neutral_org_gen", "fid_neutral_recon_gen", "fid_inception_org_gen", "fid_inception_recon_gen",
              "kid_neutral_org_gen", "kid_neutral_org_gen_std", "precision", "recall", "density", "coverage"}
    for strategy in ("convex", "gaussian", "lsdm", "lr-livae"):
        mine = [r for r in rows if r["strategy"] == strategy and r["scope"] == "run"]
        assert {r["metric"] for r in mine if r["subset"] == "all"} == judged
        accepted = {r["metric"] for r in mine if r["subset"] == "accepted"}
        assert accepted == judged | {"novelty_nn_l2_mean", "novelty_nn_ssim_mean", "novelty_nn_l2_min", "novelty_nn_ssim_max"} or not summaries["generate"]["trials"][TRIAL]["strategies"][strategy]["accepted"]
        assert {r["metric"] for r in mine if r["subset"] is None} == {"accept_rate", "accepted_count"}
        value = {(r["metric"], r["subset"]): r["value"] for r in mine}
        assert value[("accept_rate", None)] == pytest.approx(summaries["generate"]["trials"][TRIAL]["strategies"][strategy]["accept_rate"])
        assert all(0 <= value[(k, "all")] <= 1 for k in ("neutral_acc_gen", "precision", "recall", "coverage"))
        assert value[("fid_neutral_org_gen", "all")] >= 0 and value[("density", "all")] >= 0
    # n only splits convex; the sampled strategies have run and class rows only.
    assert {r["scope"] for r in rows if r["strategy"] in ("gaussian", "lsdm", "lr-livae")} == {"run", "class"}
    assert all(r["strategy"] is None and r["subset"] is None for r in rows if r["metric"].startswith(("recon_", "neutral_acc_recon", "novelty_test", "fid_neutral_org_recon")))
    rows = [r for r in rows if r["strategy"] in (None, "convex") and r["subset"] in (None, "accepted")]  # the paper's numbers, as before the strategies
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
