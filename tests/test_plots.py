"""plots.py: every matplotlib figure of a run, drawn from real Parquet rows."""

from __future__ import annotations

import io

from PIL import Image

from regene_search.plots import plot_probe_mae

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
    with Image.open(io.BytesIO(paths.probe_mae_figure.read_bytes())) as image:
        assert image.format == "PNG" and image.width > 2 * image.height > 600


def test_section_42_figure_of_a_search_without_metrics(tmp_path):
    path = tmp_path / "empty.png"
    plot_probe_mae([trial("t0", 2, 1, 64, None, None, None)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
