"""matplotlib figures of a run: each drawn from a run's Parquet rows and written through `storage.Location`."""

from __future__ import annotations

import bisect
import io
import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UserError
from .results import RunPaths, write_bytes
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


# A figure to write: where, and how to draw it there.
Figure = tuple[Location, Callable[[Location], None]]


def save_each(figures: Sequence[Figure], say: Callable[[str], None]) -> list[Location]:
    """Draw each figure; the ones written, in order.

    A figure is a view of tables already written, so one that fails says why in a line (console
    and run.log) and the stage goes on with its results intact; the tests draw every figure.
    """
    written = []
    for path, draw in figures:
        try:
            draw(path)
        except Exception as exc:  # noqa: BLE001 -- reported, not hidden: the line names the figure and the error
            say(f"figure {path} not written: {type(exc).__name__}: {exc}")
        else:
            written.append(path)
    return written


def search_figures(paths: RunPaths, trials: list[dict[str, Any]], history: list[dict[str, Any]], pareto: list[dict[str, Any]],
                   hypervolume: list[dict[str, Any]], promoted: Sequence[str]) -> list[Figure]:
    """The search stage's figures, from its four tables' rows; `promoted` in promotion order."""
    name = paths.dir.name
    return [
        (paths.front_figure, lambda p: plot_front(pareto, hypervolume, p, title=name)),
        (paths.learning_curves_figure, lambda p: plot_learning_curves(history, trials, p, promoted=promoted, title=f"{name}: objectives per epoch, {len(trials)} trials")),
        (paths.hypervolume_figure, lambda p: plot_hypervolume(history, hypervolume, p, title=f"{name}: hypervolume against the compute spent")),
        (paths.probe_mae_figure, lambda p: plot_probe_mae(trials, p, promoted=promoted, title=f"{name}: probe decoder MAE against depth, latent size and sparsity")),
    ]


def generation_figures(paths: RunPaths, trial_id: str, generations: list[dict[str, Any]]) -> list[Figure]:
    """The generate stage's figures of one encoder, from its generations.parquet rows."""
    return [
        (paths.acceptance_figure(trial_id), lambda p: plot_acceptance(generations, p, title=f"{trial_id}: two-step filter acceptance, class x n")),
        (paths.filter_scatter_figure(trial_id), lambda p: plot_filter_scatter(generations, p, title=f"{trial_id}: two-step filter confidences")),
        (paths.rejected_figure(trial_id), lambda p: write_rejected(generations, p)),
    ]


# Line styles of a trial's learning curve by how it ended; promoted trials get their own colours on top.
_STATUS_STYLE = {
    "COMPLETED": {"color": "tab:blue", "linestyle": "-", "alpha": 0.45, "label": "completed"},
    "STOPPED": {"color": "0.55", "linestyle": "--", "alpha": 0.6, "label": "stopped early"},
    "DIVERGED": {"color": "tab:red", "linestyle": ":", "alpha": 0.8, "label": "diverged / failed"},
}
_STATUS_STYLE["ERROR"] = _STATUS_STYLE["DIVERGED"]
_PROMOTED_COLOURS = ("gold", "tab:orange", "tab:purple", "tab:green", "tab:brown", "tab:pink", "tab:cyan", "tab:olive")


def plot_learning_curves(
    history: Sequence[dict[str, Any]], trials: Sequence[dict[str, Any]], path: Location | Path, *, promoted: Sequence[str] = (), title: str = ""
) -> None:
    """Each objective against epoch, a line per trial (history.parquet rows); trials.parquet gives
    how each ended (completed solid, stopped early dashed grey, diverged or failed dotted red with
    an x at its last epoch), promoted trials are drawn thick in their own colours and named."""
    plt = _pyplot()
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    status = {t["trial_id"]: t.get("status") for t in trials}
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(history, key=lambda r: (r["trial_id"], r["epoch"])):
        curves.setdefault(row["trial_id"], []).append(row)
    order = [t for t in dict.fromkeys([*status, *curves]) if t not in promoted] + [t for t in promoted if t in curves]  # promoted on top
    colour = {t: _PROMOTED_COLOURS[i % len(_PROMOTED_COLOURS)] for i, t in enumerate(promoted)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for ax, objective in zip(axes, OBJECTIVES):
        for trial_id in order:
            rows = curves.get(trial_id, [])
            if not rows:
                continue
            epochs, values = [r["epoch"] for r in rows], [_number(r.get(objective)) for r in rows]
            style = _STATUS_STYLE.get(status.get(trial_id), _STATUS_STYLE["COMPLETED"])
            if trial_id in colour:
                ax.plot(epochs, values, color=colour[trial_id], linewidth=2.6, marker="o", markersize=4, markeredgecolor="k", zorder=5)
            else:
                ax.plot(epochs, values, color=style["color"], linestyle=style["linestyle"], alpha=style["alpha"], linewidth=1.1, marker="o", markersize=2.5)
            last = max((i for i, v in enumerate(values) if math.isfinite(v)), default=None)
            if status.get(trial_id) in ("DIVERGED", "ERROR") and last is not None:  # where it was last seen well
                ax.plot([epochs[last]], [values[last]], marker="x", markersize=9, markeredgewidth=2, color="tab:red", zorder=6)
        ax.set_xlabel("epoch")
        ax.set_ylabel(OBJECTIVE_LABELS[objective])
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    counts = {label: sum(1 for t in dict.fromkeys([*status, *curves]) if _STATUS_STYLE.get(status.get(t), _STATUS_STYLE["COMPLETED"])["label"] == label)
              for label in dict.fromkeys(s["label"] for s in _STATUS_STYLE.values())}
    handles = [Line2D([], [], color=s["color"], linestyle=s["linestyle"], label=f"{s['label']} ({counts[s['label']]})")
               for s in (_STATUS_STYLE["COMPLETED"], _STATUS_STYLE["STOPPED"], _STATUS_STYLE["DIVERGED"])]
    handles += [Line2D([], [], color=colour[t], linewidth=2.6, marker="o", markeredgecolor="k", label=f"promoted {t}") for t in promoted]
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(title or f"objectives per epoch ({len(status) or len(curves)} trials)")
    _save(fig, path)


def compute_spent(history: Sequence[dict[str, Any]], hypervolume: Sequence[dict[str, Any]]) -> list[int]:
    """Trial-epochs reported over all trials by the time each trial of hypervolume.parquet finished.

    A trial finished at its last epoch's `timestamp`; one without any (it failed before its first
    epoch) adds nothing, so it sits at the compute spent before it.
    """
    stamps = sorted(r["timestamp"] for r in history if _finite(r.get("timestamp")))
    finished: dict[str, float] = {}
    for r in history:
        if _finite(r.get("timestamp")):
            finished[r["trial_id"]] = max(finished.get(r["trial_id"], -math.inf), r["timestamp"])
    spent = []
    for row in hypervolume:
        at = finished.get(row["trial_id"])
        now = bisect.bisect_right(stamps, at) if at is not None else 0
        spent.append(max(now, spent[-1] if spent else 0))  # completion order: never less than before
    return spent


def plot_hypervolume(history: Sequence[dict[str, Any]], hypervolume: Sequence[dict[str, Any]], path: Location | Path, *, title: str = "") -> None:
    """Hypervolume (hypervolume.parquet) against the compute spent: trial-epochs of history.parquet,
    counted over every trial, finished or still running, up to each completion."""
    plt = _pyplot()
    spent = compute_spent(history, hypervolume)
    values = [r["hypervolume"] for r in hypervolume]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    total = max(len(history), spent[-1] if spent else 0)
    # The hypervolume holds from one completion to the next: a step, carried on to all compute spent.
    ax.step([0, *spent, total], [0.0, *values, values[-1] if values else 0.0], where="post", color="tab:blue")
    ax.plot(spent, values, "o", color="tab:blue", markersize=4, label="a trial finished")
    ax.set_xlabel("trial-epochs spent (all trials)")
    ax.set_ylabel("hypervolume ↑")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if values:
        ax.legend(fontsize=8, loc="lower right")
    final = values[-1] if values else 0.0
    fig.suptitle(title or f"hypervolume {final:.4f} after {total} trial-epochs, {len(values)} trials finished")
    _save(fig, path)


def plot_decoder_curves(decoder: Sequence[dict[str, Any]], path: Location | Path, *, title: str = "") -> None:
    """decoder.parquet rows: the loss minimised, its parts, validation MAE and SSIM per epoch, a colour per
    decoder: each encoder's ReGene decoder, and its lr-livae decoder when there is one (rows without
    `decoder` are ReGene's). The lr-livae decoder's loss minimised includes its weighted KL."""
    plt = _pyplot()
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    curves: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(decoder, key=lambda r: r["epoch"]):
        kind = row.get("decoder") or "regene"
        curves.setdefault(row["trial_id"] if kind == "regene" else f"{row['trial_id']} {kind}", []).append(row)
    colour = {t: f"C{i % 10}" for i, t in enumerate(curves)}
    # Each part of the loss with the weight it had; a part weighted 0 is not computed (stored as 0), so not drawn.
    parts = {"loss_mae": ("MAE", "-", "w_mae"), "loss_ssim": ("1 - SSIM", "--", "w_ssim"), "loss_perceptual": ("perceptual", ":", "w_perceptual")}
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    for trial_id, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [_number(r.get("loss_total")) for r in rows], color=colour[trial_id], marker="o", markersize=3, label=trial_id)
        for column, (_, linestyle, weight) in parts.items():
            values = [_number(r.get(column)) if r.get(weight) != 0 else math.nan for r in rows]
            axes[1].plot(epochs, values, color=colour[trial_id], linestyle=linestyle, marker="o", markersize=2)
        axes[2].plot(epochs, [_number(r.get("val_mae")) for r in rows], color=colour[trial_id], marker="o", markersize=3)
        axes[3].plot(epochs, [_number(r.get("val_ssim")) for r in rows], color=colour[trial_id], marker="o", markersize=3)
    labels = ("training loss minimised (weighted sum)", "training loss parts", "validation MAE ↓", "validation SSIM ↑")
    for ax, label in zip(axes, labels):
        ax.set_xlabel("decoder epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if curves:
        axes[0].legend(title="encoder (decoder)", fontsize=8)
        axes[1].legend(handles=[Line2D([], [], color="k", linestyle=s, label=name) for name, s, _ in parts.values()], fontsize=8)
    fig.suptitle(title or f"decoder training, {len(curves)} encoder(s)")
    _save(fig, path)


def _by_class(generations: Sequence[dict[str, Any]]) -> dict[int, str]:
    """class -> class name, in class order."""
    return dict(sorted({r["class"]: r["class_name"] for r in generations}.items()))


def plot_acceptance(generations: Sequence[dict[str, Any]], path: Location | Path, *, title: str = "") -> None:
    """The two-step filter's acceptance rate as a class x n heatmap (generations.parquet rows of one
    encoder), each cell with its rate and accepted/generated; a last column over all n."""
    plt = _pyplot()
    classes = _by_class(generations)
    ns = sorted({r["n"] for r in generations})
    columns = [*ns, None]  # None: all n
    counts = {(c, n): [0, 0] for c in classes for n in columns}
    for r in generations:
        for n in (r["n"], None):
            counts[(r["class"], n)][0] += bool(r["accepted"])
            counts[(r["class"], n)][1] += 1
    rates = np.array([[counts[(c, n)][0] / counts[(c, n)][1] if counts[(c, n)][1] else np.nan for n in columns] for c in classes]).reshape(len(classes), len(columns))
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 3, 0.42 * len(classes) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(rates), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i, c in enumerate(classes):
        for j, n in enumerate(columns):
            accepted, generated = counts[(c, n)]
            text = f"{rates[i, j]:.2f}\n{accepted}/{generated}" if generated else "—"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="k" if generated and rates[i, j] > 0.6 else "w" if generated else "0.4")
    ax.axvline(len(ns) - 0.5, color="w", linewidth=3)  # sets "all n" apart
    ax.set_xticks(range(len(columns)), [f"n={n}" for n in ns] + ["all n"])
    ax.set_yticks(range(len(classes)), list(classes.values()))
    ax.set_ylabel("class")
    fig.colorbar(image, ax=ax, label="accepted share")
    accepted = sum(bool(r["accepted"]) for r in generations)
    fig.suptitle(title or f"two-step filter: {accepted}/{len(generations)} accepted")
    _save(fig, path)


def image_threshold(row: dict[str, Any]) -> float:
    """The image step's threshold of a generations.parquet row; a run from before the column held both steps to `threshold`."""
    value = row.get("image_threshold")
    return row["threshold"] if value is None or (isinstance(value, float) and math.isnan(value)) else value


def plot_filter_scatter(generations: Sequence[dict[str, Any]], path: Location | Path, *, title: str = "") -> None:
    """The two-step filter per class: head confidence on the combined latent against the classifier's
    confidence on the decoded image, a point per generation (generations.parquet rows of one encoder),
    accepted green and rejected red; dashed lines at the class thresholds (the latent step's vertical,
    the image step's horizontal) bound the accepted corner."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    classes = _by_class(generations)
    columns = max(1, min(5, len(classes)))
    grid_rows = max(1, math.ceil(len(classes) / columns))
    fig, axes = plt.subplots(grid_rows, columns, figsize=(3.2 * columns + 0.6, 3.0 * grid_rows + 0.8), sharex=True, sharey=True, squeeze=False)
    finite = [v for r in generations for v in (r["latent_confidence"], r["image_confidence"], r["threshold"], image_threshold(r)) if _finite(v)]
    low = max(0.0, min(finite, default=0.0) - 0.03)
    for ax, (c, name) in zip(axes.flat, classes.items()):
        rows = [r for r in generations if r["class"] == c]
        for accepted, colour, label in ((False, "tab:red", "rejected"), (True, "tab:green", "accepted")):
            chosen = [r for r in rows if bool(r["accepted"]) == accepted]
            ax.scatter([_number(r["latent_confidence"]) for r in chosen], [_number(r["image_confidence"]) for r in chosen], s=7, alpha=0.5, color=colour, label=label, linewidths=0)
        threshold, image_step = rows[0]["threshold"], image_threshold(rows[0])
        if _finite(threshold) and _finite(image_step):
            ax.axvline(threshold, color="k", linestyle="--", linewidth=0.8)
            ax.axhline(image_step, color="k", linestyle="--", linewidth=0.8, label="class thresholds")
            ax.add_patch(Rectangle((threshold, image_step), 1.0 - threshold, 1.0 - image_step, color="tab:green", alpha=0.07, zorder=0))
        shown = "none" if not _finite(threshold) else f"{threshold:.3f}" if image_step == threshold else f"{threshold:.3f}/{image_step:.3f}"
        ax.set_title(f"{name}: {sum(bool(r['accepted']) for r in rows)}/{len(rows)} accepted, t={shown}", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(classes):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("head confidence on the latent")
    for ax in axes[:, 0]:
        ax.set_ylabel("confidence on the image")
    axes[0, 0].set_xlim(low, 1.01)
    axes[0, 0].set_ylim(low, 1.01)
    if classes:
        axes[0, 0].legend(fontsize=7, loc="lower left", markerscale=2)
    fig.suptitle(title or f"two-step filter, {len(generations)} generations")
    _save(fig, path)


def write_rejected(generations: Sequence[dict[str, Any]], path: Location | Path, *, per_class: int = 8, title: str = "") -> None:
    """Rejected generations of one encoder (generations.parquet rows), a row of up to `per_class` per
    class, as the PNG grid `figures.grid_png` draws; a short note when the filter rejected none."""
    from .figures import decode_png, grid_png

    classes = _by_class(generations)
    rejected = {c: [r for r in generations if r["class"] == c and not r["accepted"]] for c in classes}
    if not any(rejected.values()):
        plt = _pyplot()
        fig = plt.figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, title or f"the filter rejected none of {len(generations)} generations", ha="center", va="center")
        _save(fig, path, tight=False)
        return
    with Image.open(io.BytesIO(next(r for rows in rejected.values() for r in rows)["image_png"])) as sample:
        channels = 1 if sample.mode in ("L", "I", "I;16") else 3
    grid = [[decode_png(r["image_png"], channels) for r in rows[:per_class]] for rows in rejected.values()]
    labels = [f"{name} ({len(rejected[c])} rejected)" for c, name in classes.items()]
    write_bytes(grid_png(grid, row_labels=labels), path)


def _number(value: Any) -> float:
    """A metric as a float for matplotlib; null becomes NaN, which breaks the line there."""
    return float(value) if value is not None else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
