"""plots.py: every matplotlib figure of a run, drawn from Parquet rows written and read back by the real code."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from regene_search import plots
from regene_search.figures import encode_png
from regene_search.plots import plot_probe_mae
from regene_search.results import HISTORY_COLUMNS, HYPERVOLUME_COLUMNS, TRIAL_COLUMNS, PARETO_COLUMNS, read_parquet, table_from_rows, write_parquet
from regene_search.stages.decoder import DECODER_COLUMNS
from regene_search.stages.generate import GENERATION_COLUMNS, two_step_accept
from regene_search.stages.search import Promotion, pareto_rows

from .conftest import new_run_folder


def trial(trial_id: str, blocks: int, convs: int, latent: int, mae: float | None, sparsity: float | None, accuracy: float | None) -> dict:
    return {
        "trial_id": trial_id,
        "status": "COMPLETED" if mae is not None else "DIVERGED",
        "accuracy": accuracy,
        "decoder_mae": mae,
        "latent_sparsity": sparsity,
        "param_blocks": blocks,
        "param_convs_per_block": convs,
        "param_latent_dim": latent,
    }


def image(path) -> Image.Image:
    """The figure as PIL reads it (through the same Location the run writes with)."""
    from regene_search.storage import Location

    picture = Image.open(io.BytesIO(Location.of(path).read_bytes()))
    picture.load()
    return picture


def round_trip(rows: list[dict], schema, path) -> list[dict]:
    """Rows written as the stages write their tables, then read back: the figures get what a reader gets."""
    write_parquet(table_from_rows(rows, schema), path)
    return read_parquet(path).to_pylist()


def test_section_42_figure_is_written_where_run_paths_name_it(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "fig")
    trials = [
        trial("t0", 2, 1, 64, 0.05, 0.2, 0.95),
        trial("t1", 3, 2, 512, 0.09, 0.6, 0.98),
        trial("t2", 3, 1, 32, 0.07, 0.4, 0.97),
        trial("t3", 2, 2, 256, None, None, None),  # failed: left out, not an error
    ]
    plot_probe_mae(trials, paths.probe_mae_figure, promoted=["t0"])
    assert paths.probe_mae_figure.relative_to(paths.dir) == "figures/probe-mae.png"
    with Image.open(io.BytesIO(paths.probe_mae_figure.read_bytes())) as picture:
        assert picture.format == "PNG" and picture.width > 2 * picture.height > 600


def test_section_42_figure_of_a_search_without_metrics(tmp_path):
    path = tmp_path / "empty.png"
    plot_probe_mae([trial("t0", 2, 1, 64, None, None, None)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# A search of every kind of trial: (status, objectives per epoch, each epoch's report time); None = a
# diverged epoch's null metrics. t3 lacks epoch 2 (a lost report), t4 failed before its first epoch.
SEARCH = {
    "t0": ("COMPLETED", [(0.90, 0.08, 0.10), (0.95, 0.07, 0.12), (0.97, 0.06, 0.15)], [10, 20, 30]),
    "t1": ("STOPPED", [(0.60, 0.10, 0.40)], [12]),
    "t2": ("DIVERGED", [(0.50, 0.12, 0.30), None], [14, 24]),
    "t3": ("COMPLETED", [(0.85, 0.09, 0.05), (0.92, 0.07, 0.04)], [31, 50]),
    "t4": ("ERROR", [], []),
}


def search_tables(paths, search: dict) -> tuple[list, list, list, list, list[str]]:
    """trials, history, pareto and hypervolume of `search` as the search stage computes and writes them."""
    trials, history = [], []
    for trial_id, (status, epochs, stamps) in search.items():
        last = next((e for e in reversed(epochs) if e is not None), None) if status in ("COMPLETED", "STOPPED") else None
        params = {"param_blocks": 2 + len(trials) % 2, "param_convs_per_block": 1, "param_latent_dim": 32 * 2 ** len(trials)}
        trials.append({"trial_id": trial_id, "status": status, "epochs": len(epochs), **params, **dict(zip(("accuracy", "decoder_mae", "latent_sparsity"), last or (None,) * 3))})
        numbers = [1, 3] if trial_id == "t3" else range(1, len(epochs) + 1)
        for epoch, objectives, stamp in zip(numbers, epochs, stamps):
            history.append({"trial_id": trial_id, "epoch": epoch, "timestamp": float(stamp), **dict(zip(("accuracy", "decoder_mae", "latent_sparsity"), objectives or (None,) * 3))})
    pareto, hv, promoted = pareto_rows(trials, Promotion(method="front"))
    return (
        round_trip(trials, TRIAL_COLUMNS, paths.trials),
        round_trip(history, HISTORY_COLUMNS, paths.history),
        round_trip(pareto, PARETO_COLUMNS, paths.pareto),
        round_trip(hv, HYPERVOLUME_COLUMNS, paths.hypervolume),
        promoted,
    )


def draw(figures: list[plots.Figure]) -> list:
    """save_each, failing the test on any figure it could not write."""
    failures = []
    written = plots.save_each(figures, failures.append)
    assert failures == []
    return written


@pytest.mark.parametrize("kept", [list(SEARCH), ["t0"], ["t4"]], ids=["every-kind", "one-trial", "only-a-failure"])
def test_search_figures_are_pngs_of_every_kind_of_search(tmp_path, kept):
    paths = new_run_folder(tmp_path, "mnist", "search")
    trials, history, pareto, hv, promoted = search_tables(paths, {t: SEARCH[t] for t in kept})
    written = draw(plots.search_figures(paths, trials, history, pareto, hv, promoted))
    assert [p.relative_to(paths.dir) for p in written] == ["figures/front.png", "figures/learning-curves.png", "figures/hypervolume.png", "figures/probe-mae.png"]
    for path in written:
        picture = image(path)
        assert picture.format == "PNG" and picture.width >= 700 and picture.height >= 400, path


def test_search_figures_are_deterministic(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "again")
    tables = search_tables(paths, SEARCH)
    first = {p.name: p.read_bytes() for p in draw(plots.search_figures(paths, *tables))}
    second = {p.name: p.read_bytes() for p in draw(plots.search_figures(paths, *tables))}
    assert first == second


def test_compute_spent_counts_every_trials_epochs_up_to_each_completion(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "spent")
    _, history, _, _, _ = search_tables(paths, SEARCH)
    # Completed t1 (last epoch at 12), t2 (24), t0 (30), t3 (50), t4 (none): epochs reported by then, over all trials.
    spent = plots.compute_spent(history, [{"trial_id": t, "hypervolume": 0.0} for t in ("t1", "t2", "t0", "t3", "t4")])
    assert spent == [2, 5, 6, 8, 8]


def decoder_rows(trial_id: str, epochs: int, *, perceptual_until: int, decoder: str | None = None) -> list[dict]:
    """Rows of one decoder; `decoder` None leaves the column null, as in a file from before lr-livae."""
    return [
        {"trial_id": trial_id, "decoder": decoder, "epoch": e, "loss_mae": 0.2 / e, "loss_ssim": 0.5 / e, "loss_perceptual": 0.4 / e if e <= perceptual_until else 0.0,
         "loss_total": 1.0 / e, "w_mae": 1.0, "w_ssim": 1.0 / e, "w_perceptual": 0.5 if e <= perceptual_until else 0.0,
         "val_mae": 0.1 / e, "val_ssim": 1 - 0.3 / e, "perceptual_backbone": "neutral-resnet", "seconds": 1.0}
        for e in range(1, epochs + 1)
    ]


@pytest.mark.parametrize("encoders, kinds", [(1, (None,)), (3, (None,)), (2, ("regene", "lr-livae"))])
def test_decoder_curves_of_one_or_several_encoders_and_decoders(tmp_path, encoders, kinds):
    paths = new_run_folder(tmp_path, "mnist", "decoder")
    rows = round_trip([r for i in range(encoders) for kind in kinds for r in decoder_rows(f"t{i}", 4 - i, perceptual_until=2, decoder=kind)], DECODER_COLUMNS, paths.decoder)
    plots.plot_decoder_curves(rows, paths.decoder_curves_figure)
    picture = image(paths.decoder_curves_figure)
    assert picture.format == "PNG" and picture.width > 3 * picture.height > 1200


def generations(thresholds: Sequence[float]) -> list[dict]:
    """Generations of a class per threshold, n in (2, 3), 4 per (class, n), filtered as the generate
    stage filters them; confidences (0.5, 0.9), (0.6, 0.85), (0.7, 0.8), (0.8, 0.75); each image flat at its own value k."""
    rows, k = [], 0
    for c, threshold in enumerate(thresholds):
        for n in (2, 3):
            latent, picture = torch.tensor([0.5, 0.6, 0.7, 0.8]), torch.tensor([0.9, 0.85, 0.8, 0.75])
            accepted = two_step_accept(latent, picture, torch.full((4,), threshold))
            for i in range(4):
                k += 1
                rows.append({"trial_id": "t0", "class": c, "class_name": f"class {c}", "n": n, "source_indices": list(range(n)), "weights": [1 / n] * n,
                             "latent_confidence": float(latent[i]), "image_confidence": float(picture[i]), "threshold": threshold,
                             "accepted": bool(accepted[i]), "image_png": encode_png(torch.full((3, 16, 16), k, dtype=torch.uint8))})
    return rows


@pytest.mark.parametrize(("case", "threshold"), [("mixed", 0.7), ("none-accepted", 0.95), ("none-rejected", 0.4)])
def test_generation_figures_of_mixed_and_one_sided_filters(tmp_path, case, threshold):
    paths = new_run_folder(tmp_path, "mnist", case)
    rows = round_trip(generations([threshold] * 3), GENERATION_COLUMNS, paths.generations)
    assert {r["accepted"] for r in rows} == {"mixed": {True, False}, "none-accepted": {False}, "none-rejected": {True}}[case]
    written = draw(plots.generation_figures(paths, "t0", rows))
    assert [p.relative_to(paths.dir) for p in written] == ["figures/t0/acceptance.png", "figures/t0/filter-scatter.png", "figures/t0/rejected.png"]
    for path in written[:2]:
        picture = image(path)
        assert picture.format == "PNG" and picture.width >= 500 and picture.height >= 300, path
    rejected = image(written[2])
    assert rejected.format == "PNG"
    if case == "none-rejected":  # a one-line note instead of an empty grid
        assert rejected.width > 3 * rejected.height
    else:  # a row per class of 16 px images at scale 2: up to 8 rejected each
        assert rejected.height == 2 + 3 * (32 + 2)
        assert rejected.width > (8 if case == "none-accepted" else 4) * (32 + 2)


def test_the_rejected_grid_holds_the_rejected_images_of_each_class(tmp_path):
    rows = generations([0.55, 0.4])  # class 0 rejects the first of each n (images 1 and 5); class 1 none
    path = tmp_path / "rejected.png"
    plots.write_rejected(rows, path)
    picture = image(path).convert("RGB")
    assert sum(not r["accepted"] for r in rows) == 2 and picture.height == 2 + 2 * (32 + 2)
    # Class 0's row: its rejected images in order (pixel values 1 and 5); class 1's row: empty, grey.
    first = picture.width - 2 * (32 + 2)  # cells are 32 px and 2 px apart, labels to their left
    assert picture.getpixel((first + 10, 12)) == (1,) * 3 and picture.getpixel((first + 34 + 10, 12)) == (5,) * 3
    assert picture.getpixel((first + 10, 2 + 34 + 10)) == (96,) * 3


def test_a_figure_that_fails_is_reported_and_the_others_are_written(tmp_path):
    paths = new_run_folder(tmp_path, "mnist", "fails")
    trials, history, pareto, hv, promoted = search_tables(paths, SEARCH)
    said = []
    figures = [(paths.figures / "front.gif", lambda p: plots.plot_front(pareto, hv, p)), *plots.search_figures(paths, trials, history, pareto, hv, promoted)[1:]]
    written = plots.save_each(figures, said.append)
    assert len(written) == 3 and all(p.exists() for p in written)
    assert len(said) == 1 and "front.gif not written: UserError" in said[0] and not (paths.figures / "front.gif").exists()
