"""matplotlib figures of a run: each drawn from a run's Parquet rows and written through `storage.Location`."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError
from .results import write_bytes
from .search.pareto import OBJECTIVES
from .storage import Location

OBJECTIVE_LABELS = {"accuracy": "accuracy ↑", "decoder_mae": "decoder MAE ↓", "latent_sparsity": "sparsity ↓"}
FIGURE_FORMATS = ("png", "svg", "pdf")


def plot_front(pareto: Sequence[dict[str, Any]], hypervolume: Sequence[dict[str, Any]], path: Location | Path, *, title: str = "") -> None:
    """Pairwise scatters of the three objectives (front highlighted, promoted annotated) and HV vs trials.

    `pareto` and `hypervolume` are the rows of pareto.parquet and hypervolume.parquet.
    """
    plt = _pyplot()
    import matplotlib.ticker

    rows = [r for r in pareto if r["rank"] >= 0]
    pairs = [(0, 1), (0, 2), (1, 2)]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, (i, j) in zip(axes, pairs):
        xi, yj = OBJECTIVES[i], OBJECTIVES[j]
        rest = [r for r in rows if not r["on_front"]]
        on = [r for r in rows if r["on_front"]]
        ax.scatter([r[xi] for r in rest], [r[yj] for r in rest], c="0.7", s=25, label="dominated")
        ax.scatter([r[xi] for r in on], [r[yj] for r in on], c="tab:red", s=40, label="front")
        for r in rows:
            if r["promoted"]:
                ax.scatter([r[xi]], [r[yj]], marker="*", s=260, c="gold", edgecolors="k", zorder=5, label="promoted")
                ax.annotate(r["trial_id"], (r[xi], r[yj]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xlabel(OBJECTIVE_LABELS[xi])
        ax.set_ylabel(OBJECTIVE_LABELS[yj])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[3].plot([r["completed"] for r in hypervolume], [r["hypervolume"] for r in hypervolume], marker="o")
    axes[3].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[3].set_xlabel("completed trials")
    axes[3].set_ylabel("hypervolume")
    axes[3].grid(alpha=0.3)
    final_hv = hypervolume[-1]["hypervolume"] if hypervolume else 0.0
    on_front = sum(1 for r in pareto if r["on_front"])
    fig.suptitle(f"{title + ': ' if title else ''}{on_front} on front, HV {final_hv:.4f}")
    _save(fig, path)


def plot_probe_mae(trials: list[dict[str, Any]], path: Location | Path, *, promoted: Sequence[str] = (), title: str = "") -> None:
    """The paper's section 4.2 as a figure: probe decoder MAE against depth, latent size and sparsity.

    One point per trial with metrics (trials.parquet rows); colour = validation accuracy, marker =
    convs per block, promoted trials ringed in red. Depth is `blocks`, nudged apart by convs per block.
    """
    plt = _pyplot()
    import matplotlib.ticker

    rows = [r for r in trials if r.get("decoder_mae") is not None and math.isfinite(r["decoder_mae"])]
    markers = {1: "o", 2: "s"}

    def x(r: dict[str, Any], column: str) -> float:
        nudge = {1: -0.08, 2: 0.08}.get(r.get("param_convs_per_block"), 0.0) if column == "param_blocks" else 0.0
        return r.get(column) + nudge

    panels = [("param_blocks", "depth (conv blocks)"), ("param_latent_dim", "latent size"), ("latent_sparsity", OBJECTIVE_LABELS["latent_sparsity"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharey=True)
    norm = plt.Normalize(min((r["accuracy"] for r in rows), default=0.0), max((r["accuracy"] for r in rows), default=1.0))
    for ax, (column, label) in zip(axes, panels):
        for convs in sorted({r.get("param_convs_per_block") for r in rows}, key=str):
            group = [r for r in rows if r.get("param_convs_per_block") == convs]
            ax.scatter([x(r, column) for r in group], [r["decoder_mae"] for r in group], c=[r["accuracy"] for r in group], cmap="viridis", norm=norm,
                       marker=markers.get(convs, "^"), s=45, edgecolors="k", linewidths=0.4, label=f"{convs} conv/block")
        chosen = [r for r in rows if r["trial_id"] in set(promoted)]
        if chosen:
            ax.scatter([x(r, column) for r in chosen], [r["decoder_mae"] for r in chosen], s=220, facecolors="none", edgecolors="red", linewidths=1.5, label="promoted")
        if column == "param_latent_dim":
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        if column == "param_blocks":  # the depths present; a locator puts fractional ticks between nudged points
            ax.set_xticks(sorted({r["param_blocks"] for r in rows}))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probe decoder MAE ↓")
    if rows:
        axes[0].legend(fontsize=8)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=list(axes), label="validation accuracy ↑", fraction=0.025)
    fig.suptitle(title or f"probe decoder MAE against depth, latent size and sparsity ({len(rows)} trials)")
    _save(fig, path, tight=False)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_format(path: Location | Path | str) -> str:
    """The format a figure path's suffix names; a UserError for any other."""
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise UserError(f"{path}: a figure is written as {', '.join('.' + f for f in FIGURE_FORMATS)}; name the file with one of those suffixes")
    return suffix


def _save(fig, path: Location | Path, *, tight: bool = True) -> None:
    """The figure in the format its suffix names (PNG, SVG or PDF), written atomically to a local path or a URI."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=figure_format(path), dpi=110, bbox_inches=None if tight else "tight")
    plt.close(fig)
    write_bytes(buffer.getvalue(), path)
