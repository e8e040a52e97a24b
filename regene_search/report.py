"""What the user reads: rich tables of the front and of a run, JSON for machines (figures: plots.py)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import STAGES
from .errors import RunDirError
from .results import RunPaths, parquet_rows, read_parquet, read_run_record, read_stages
from .search.pareto import OBJECTIVES
from .stages import proxy
from .storage import Location

_COLUMN_LABELS = {"accuracy": "acc ↑", "decoder_mae": "MAE ↓", "latent_sparsity": "sparse ↓"}


@dataclass(frozen=True)
class Front:
    run_dir: Location
    pareto: list[dict[str, Any]]
    hypervolume: list[dict[str, Any]]
    trials: dict[str, dict[str, Any]]

    @property
    def final_hypervolume(self) -> float:
        return self.hypervolume[-1]["hypervolume"] if self.hypervolume else 0.0

    @property
    def unfinished(self) -> int:
        """Trials still running or pending: the tables are the live ones of a search under way."""
        return sum(1 for t in self.trials.values() if t.get("status") in ("RUNNING", "PENDING"))

    @property
    def front(self) -> list[dict[str, Any]]:
        """Front rows sorted by accuracy (desc), then MAE, then sparsity."""
        rows = [r for r in self.pareto if r["on_front"]]
        return sorted(rows, key=lambda r: (-r["accuracy"], r["decoder_mae"], r["latent_sparsity"]))


def _require_columns(table: pa.Table, columns: list[str], path: Location) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise RunDirError(f"{path} lacks column(s) {', '.join(missing)}: not a regene-search file")


def load_front(run_dir: Location | str) -> Front:
    paths = RunPaths.existing(run_dir)
    if not paths.pareto.exists():
        raise RunDirError(f"{paths.dir} has no pareto.parquet yet: the search stage has not finished")
    pareto = read_parquet(paths.pareto)
    _require_columns(pareto, ["trial_id", *OBJECTIVES, "rank", "crowding", "on_front", "promoted"], paths.pareto)
    hv = read_parquet(paths.hypervolume)
    trials = read_parquet(paths.trials)
    return Front(paths.dir, pareto.to_pylist(), hv.to_pylist(), {r["trial_id"]: r for r in trials.to_pylist()})


def architecture(trial: dict[str, Any]) -> str:
    """Compact encoder summary, e.g. `3x1 w32 z128 relu`; lrelu = leaky_relu (blocks x convs, width, latent, activation)."""
    p = {k[len("param_") :]: v for k, v in trial.items() if k.startswith("param_")}
    if not p:
        return ""
    return f"{p.get('blocks')}x{p.get('convs_per_block')} w{p.get('base_width')} z{p.get('latent_dim')} {str(p.get('latent_activation')).replace('leaky_relu', 'lrelu')}"


def print_front(front: Front, console: Console) -> None:
    table = Table(title=f"Pareto front — {front.run_dir.name}", title_justify="left")
    table.add_column("", width=1)
    table.add_column("trial", min_width=8, no_wrap=True)
    for name in OBJECTIVES:
        table.add_column(_COLUMN_LABELS[name], justify="right", min_width=6, no_wrap=True)
    table.add_column("joint", justify="right", min_width=6, no_wrap=True)
    table.add_column("crowd", justify="right", min_width=5, no_wrap=True)
    table.add_column("encoder", overflow="fold")
    for row in front.front:
        mark = "★" if row["promoted"] else ""
        crowd = "inf" if math.isinf(row["crowding"]) else f"{row['crowding']:.3f}"
        table.add_row(
            mark,
            row["trial_id"],
            *(f"{row[n]:.4f}" for n in OBJECTIVES),
            f"{row['joint_score']:.4f}",
            crowd,
            architecture(front.trials.get(row["trial_id"], {})),
            style="bold green" if row["promoted"] else None,
        )
    console.print(table)
    failed = sum(1 for r in front.pareto if r["rank"] < 0) - sum(1 for t in front.trials.values() if t.get("status") == "PENDING")
    if front.unfinished:
        console.print(f"the search is still running: {front.unfinished} trial(s) not finished, shown at their latest epoch; nothing is promoted yet")
    console.print(
        f"{len(front.front)} on the front of {len(front.pareto)} trials ({failed} failed); ★ = promoted. "
        f"Hypervolume {front.final_hypervolume:.4f} (reference point (1,1,1) on (1-accuracy, MAE, sparsity))"
    )
    history = " ".join(f"{r['hypervolume']:.3f}" for r in front.hypervolume)
    console.print(f"hypervolume after each completed trial: {history}")


def front_json(front: Front) -> str:
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps(
        {
            "run_dir": str(front.run_dir),
            "hypervolume": front.final_hypervolume,
            "hypervolume_history": [r["hypervolume"] for r in front.hypervolume],
            "front": [{k: clean(v) for k, v in r.items()} for r in front.front],
            "promoted": [r["trial_id"] for r in front.pareto if r["promoted"]],
            "trials": len(front.pareto),
            "unfinished": front.unfinished,
        },
        indent=2,
    )


def print_datasets(console: Console) -> None:
    from .data import list_datasets

    table = Table(title="datasets")
    for column in ("name", "shape", "classes", "looks for data in"):
        table.add_column(column)
    for info in list_datasets():
        shape = f"{info.channels}x{info.image_size}x{info.image_size}" if info.image_size else "from the folder"
        classes = f"{len(info.classes)}: {', '.join(info.classes)}" if info.classes else "from the folder"
        table.add_row(info.name, shape, escape(classes), escape(info.looks_for))
    console.print(table)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.0f}" if isinstance(value, (int, float)) and float(value).is_integer() and abs(value) >= 10 else f"{value:.{digits}f}"


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """`show`: the run in one screen, from `summary.run_summary`."""
    from .summary import OBJECTIVE_LABELS

    s, search = summary, summary["search"]
    versions = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in s["versions"].items())
    console.print(f"[bold]{escape(s['name'])}[/bold]  {escape(str(s['dataset']))} · budget {s['budget']} · seed {s['seed']} · "
                  + (f"semi-supervised: {labelled_share(s['labelled_fraction'])} · " if s["labelled_fraction"] < 1 else "")
                  + f"created {s['created']} · stages took {duration(s['wall_seconds'])}")
    console.print(f"filter: {s['filter']}", highlight=False)
    console.print(f"search: {search['sampler']} sampler, {search['scheduler_detail']}, {search['trials']} of {search['trials_planned']} trials "
                  f"({search['trial_epochs']} trial-epochs), promote {search['promote']}", highlight=False)
    console.print(f"[dim]{escape(versions)}" + (f" · commit {s['git_commit'][:8]}" if s.get("git_commit") else "") + "[/dim]", highlight=False)
    stages = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    estimated = any(stage.get("estimated_seconds") is not None for stage in s["stages"])
    for column in ("stage", "status", "time", *(["estimate"] if estimated else []), ""):
        stages.add_column(column, overflow="fold")
    for stage in s["stages"]:
        style = {"done": "green", "failed": "red", "interrupted": "yellow", "running": "yellow"}.get(stage["status"], "dim")
        guess = [duration(stage.get("estimated_seconds"))] if estimated else []
        stages.add_row(stage["stage"], f"[{style}]{stage['status']}[/{style}]", duration(stage["seconds"]), *guess, escape(stage["headline"]))
    console.print(stages)
    for promoted in s["promoted"]:
        objectives = "  ".join(f"{OBJECTIVE_LABELS[k]} {number(v, 4)}" for k, v in promoted["objectives"].items())
        console.print(f"[bold]promoted {promoted['trial_id']}[/bold]  {promoted['architecture']}  {objectives}", highlight=False)
        config = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in promoted["config"].items())
        console.print(f"  {escape(config)}", highlight=False, soft_wrap=False)
    for quality in s["quality"]:
        if quality.get("strategy", "convex") == "convex":  # metric x n: the paper's convex combinations
            print_quality(quality, console)
    for comparison in s.get("comparison", []):
        if len(comparison["strategies"]) > 1:
            print_comparison(comparison, console)
    if s["judge"]:
        judge = s["judge"]
        recipe = f" ({judge['recipe']} recipe)" if judge.get("recipe") else ""
        console.print(f"judge: neutral ResNet-{judge['depth']}{recipe}, test accuracy {judge['test_accuracy']:.3f}"
                      + (f" [yellow](weak: below {judge['target']:g})[/yellow]" if judge["weak"] else ""))
    agreement = s["agreement"]
    if agreement:
        said = agreement["reason"] or "; ".join(agreement["verdicts"]) + (f" ({agreement['caveat']})" if agreement.get("caveat") else "")
        console.print(f"rank agreement of search scores with results: {escape(said)}", highlight=False)
    if s["warnings"]:
        console.print("[bold yellow]warnings[/bold yellow]")
        for line in s["warnings"]:
            console.print(f"  [yellow]![/yellow] {escape(line)}", highlight=False)
    more = ["show --detail (every stage and file)", "show --json"] + ([escape(s["report"])] if s.get("report") else [])
    console.print(f"[dim]more: {', '.join(more)}[/dim]")


def labelled_share(fraction: float) -> str:
    """`labels on 10% of the train split`: what --labelled-fraction gave a run."""
    return f"labels on {100 * fraction:.3g}% of the train split"


def print_quality(quality: dict[str, Any], console: Console) -> None:
    """The metric x n table of one promoted encoder, the paper's bar marked, then its weakest classes."""
    from .summary import PAPER_BAR

    table = Table(title=f"{quality['trial_id']}: generations (✓ / ✗ : at or above / below the paper's bar of {PAPER_BAR:g})", title_justify="left",
                  box=None, pad_edge=False, header_style="bold")
    table.add_column("metric")
    for n in quality["ns"]:
        table.add_column(f"n={n}", justify="right")
    table.add_column("all", justify="right")

    for row in (r for r in quality["table"] if r["metric"] != "accepted_count"):  # the count is in --json and the report; one screen
        table.add_row(row["label"], *(_bar_cell(row["by_n"].get(n), row) for n in quality["ns"]), _bar_cell(row["all"], row))
    console.print(table)
    run = quality["run"]
    console.print(f"  reconstructions: MAE {number(run.get('recon_mae'), 4)}, SSIM {number(run.get('recon_ssim'))}, neutral accuracy {number(run.get('neutral_acc_recon'))}"
                  f" · nearest training image: generations L2 {number(run.get('novelty_nn_l2_mean'), 2)}, test images L2 {number(run.get('novelty_test_nn_l2_mean'), 2)}",
                  highlight=False)
    weakest = [c for c in quality["classes"][:3]]
    if weakest:
        shown = ", ".join(f"{escape(c['name'])} ({number(c['accept_rate'], 2)} accepted, neutral acc {number(c.get('neutral_acc_gen'))})" for c in weakest)
        console.print(f"  weakest classes: {shown}", highlight=False)


def _bar_cell(value: Any, row: dict[str, Any]) -> str:
    text = number(value)
    if row["bar"] is None or value is None:
        return text
    return f"[green]{text} ✓[/green]" if value >= row["bar"] else f"[red]{text} ✗[/red]"


def print_comparison(comparison: dict[str, Any], console: Console) -> None:
    """One encoder's generation strategies side by side: metric rows x strategy columns, the paper's bar marked."""
    from .summary import PAPER_BAR

    table = Table(title=f"{comparison['trial_id']}: strategies (✓ / ✗ : at or above / below the paper's bar of {PAPER_BAR:g})", title_justify="left",
                  box=None, pad_edge=False, header_style="bold")
    table.add_column("metric")
    for strategy in comparison["strategies"]:
        table.add_column(strategy, justify="right")
    for row in comparison["table"]:
        table.add_row(row["label"], *(_bar_cell(row["values"].get(strategy), row) for strategy in comparison["strategies"]))
    console.print(table)


def print_run(run_dir: Location | str, console: Console) -> None:
    """Every stage's status and summary, the run's files and its figures."""
    paths = RunPaths.existing(run_dir)
    record = read_run_record(paths)
    spec = record.get("spec", {})
    console.print(f"[bold]{escape(str(paths.dir))}[/bold]: {escape(str(spec.get('dataset')))} / budget {spec.get('budget')} / seed {record.get('seed')}")
    stages = read_stages(paths)
    table = Table(title="stages")
    for column in ("stage", "status", "seconds", "summary"):
        table.add_column(column)
    for stage in STAGES:
        info = stages.get(stage, {})
        summary = info.get("reason") or "  ".join(headline(info.get("summary") or {}))
        seconds = f"{info['seconds']:.1f}" if "seconds" in info else ""
        table.add_row(stage, info.get("status", "not started"), seconds, escape(summary))
    console.print(table)
    files = [f.relative_to(paths.dir) for f in paths.dir.files()]
    for name in (f for f in files if f.endswith(".parquet") and "/" not in f):
        console.print(f"  {name}: {parquet_rows(paths.dir / name)} rows")
    figures = [f for f in files if f.endswith(".png")]
    console.print("figures: " + escape(", ".join(map(str, figures)) if figures else "none yet"))
    section = paths.probe_mae_figure.relative_to(paths.dir)
    if section in figures:
        console.print(f"section 4.2 figure (probe decoder MAE against depth, latent size, sparsity): {escape(section)}")
    if stages.get("evaluate", {}).get("status") == "done":
        print_agreement(paths, stages["evaluate"].get("summary") or {}, console)


def print_agreement(paths: RunPaths, evaluate_summary: dict[str, Any], console: Console) -> None:
    """proxy.parquet as a table of tau and rho, then one verdict per objective; or why it was not computed."""
    if not paths.proxy.exists():
        reason = (evaluate_summary.get("proxy") or {}).get("reason")
        if reason is None:  # evaluated before the agreement existed
            promoted = sum(read_parquet(paths.pareto).column("promoted").to_pylist())
            reason = proxy.not_computed(promoted) if promoted < proxy.MIN_ENCODERS else "not computed: this run was evaluated before proxy.parquet existed"
        console.print(f"rank agreement of search scores with downstream results: {reason}", markup=False)
        return
    rows = read_parquet(paths.proxy).to_pylist()
    downstream = list(dict.fromkeys(r["downstream"] for r in rows))
    k = max((r["k"] for r in rows), default=0)
    table = Table(title=f"rank agreement over K={k} promoted encoders: Kendall tau-b / Spearman rho (+1: the score orders them as the result does)", title_justify="left")
    table.add_column("search score")
    for name in downstream:
        table.add_column(proxy.LABELS.get(name, name), justify="right")
    for name in dict.fromkeys(r["proxy"] for r in rows):
        cells = {r["downstream"]: r for r in rows if r["proxy"] == name}
        table.add_row(name, *(_agreement_cell(cells.get(d)) for d in downstream))
    console.print(table)
    console.print(f"verdicts (tau >= {proxy.AGREES:g} agrees, tau < {proxy.DISAGREES:g} disagrees, else weak):")
    for row in proxy.headline_rows(rows):
        console.print(f"  {proxy.verdict(row)}", markup=False)


def _agreement_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row["k"] < proxy.MIN_ENCODERS:
        return f"— (k={row['k']})"
    if math.isnan(row["kendall_tau"]):
        return "undefined"
    return f"{row['kendall_tau']:+.2f} / {row['spearman_rho']:+.2f}"


_DETAIL_KEYS = ("by_n_class", "figures", "thresholds", "checkpoint", "source", "seconds")


def headline(summary: dict[str, Any], prefix: str = "") -> list[str]:
    """The scalar figures of a stage summary as `key=value`, nested keys dotted; detail left to stages.json."""
    items = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if any(detail in str(key) for detail in _DETAIL_KEYS):
            continue
        if isinstance(value, dict):
            items += headline(value, name + ".")
        elif isinstance(value, float):
            items.append(f"{name}={value:.4g}")
        elif isinstance(value, (int, str, bool)):
            items.append(f"{name}={value}")
        elif isinstance(value, (list, tuple)) and len(value) <= 4:
            items.append(f"{name}={','.join(map(str, value))}")
    return items
