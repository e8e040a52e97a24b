"""`RUN/report.html`: the whole run on one self-contained page (figures inlined, no script, no network).

Rendered from `summary.run_summary` plus the run's tables and every figure under `RUN/figures/`,
so a run under way or a failed one gets a page of what it has. Figures the page has no place for
still appear, under "other figures": nothing the run drew is left out.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any

from . import __version__
from .report import architecture, duration, labelled_share, number
from .results import RunPaths, read_parquet, write_bytes
from .search.pareto import OBJECTIVES
from .storage import Location
from .summary import OBJECTIVE_LABELS, PAPER_BAR, RUN_METRICS, run_summary

_NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?( ?[✓✗%])?|—|")  # right-aligned when a whole column is numbers
_MEDIA = {".png": "image/png", ".svg": "image/svg+xml"}
# Run-level figures in page order, with what each shows.
RUN_FIGURES = {
    "figures/front.png": "The Pareto front: every pair of objectives (front in red, promoted starred) and hypervolume after each finished trial",
    "figures/hypervolume.png": "Hypervolume against the trial-epochs spent: what the search bought with its compute",
    "figures/learning-curves.png": "Each trial's objectives, epoch by epoch (stopped and diverged trials marked)",
    "figures/probe-mae.png": "The paper's section 4.2: probe decoder MAE against depth, latent size and sparsity",
    "figures/decoder-curves.png": "Training curves of the full decoder of each promoted encoder",
}
# Per promoted trial, in page order: file name pattern -> caption.
TRIAL_FIGURES = (
    (r"reconstructions\.png", "Test images (top) and their reconstructions by the decoder"),
    (r"acceptance\.png", "Share of generations that passed the two-step filter, by class and n"),
    (r"filter-scatter\.png", "The two-step filter: confidence on the latent against confidence on the decoded image"),
    (r"generations-n(\d+)\.png", "Accepted generations, convex combinations of {0} latents (a row per class)"),
    (r"generations-([a-z][a-z-]*)\.png", "Accepted generations of the {0} strategy: the first of each class in draw order (a row per class)"),
    (r"interpolation-(\d+)\.png", "Interpolation between two latents of class {0}, ratios 0.1 … 0.9"),
    (r"rejected\.png", "Generations the filter rejected (a row per class)"),
    (r"novelty\.png", "Generations next to their nearest training image: near-copies would look alike"),
)

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 1em 2em; color: #1b1b1b; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.6em; }
.context { color: #555; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.done { color: #137333; } .failed { color: #b3261e; } .interrupted, .running { color: #9a6700; } .missing { color: #888; }
.warnings { background: #fff4e5; border-left: 4px solid #e8a33d; padding: 0.5em 1em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { color: #555; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { flex: 1 1 300px; }
details { margin: 0.6em 0; } summary { cursor: pointer; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def write_report(run_dir: Any, out: Any = None) -> Location:
    """Write the page (atomically) to `out` or `RUN/report.html`; return where."""
    paths = RunPaths.existing(run_dir)
    target = Location.of(out) if out else paths.report_html
    write_bytes(render(paths).encode("utf-8"), target)
    return target


def render(paths: RunPaths) -> str:
    summary = run_summary(paths.dir)
    figures = {name: None for name in summary["figures"]}  # None: not placed yet
    sections = [
        _header(summary),
        _warnings(summary),
        _stages(summary),
        _search(paths, summary, figures),
        *(_promoted(paths, summary, p, figures) for p in summary["promoted"]),
        _agreement(summary),
        _evaluation_table(paths),
        _other_figures(paths, figures),
    ]
    title = f"{summary['name']} — regene-search report"
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(s for s in sections if s)
            + f"\n<p class='context'>Written by regene-search {__version__} from the files in <code>{_e(summary['run_dir'])}</code>.</p>\n</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """A table; cells are escaped unless `raw` (cells already HTML)."""
    cell = (lambda c: c) if raw else _e
    numeric = [bool(rows) and all(_NUMBER.fullmatch(re.sub(r"<[^>]*>", "", str(row[i]))) for row in rows) for i in range(len(header))]
    head = "".join(f"<th{' class=num' if numeric[i] else ''}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if numeric[i] else ''}>{cell(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(paths: RunPaths, name: str, caption: str, figures: dict[str, Any]) -> str:
    if name not in figures:
        return ""
    figures[name] = True
    data = (paths.dir / name).read_bytes()
    media = _MEDIA[name[name.rfind("."):]]
    source = f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"
    return f"<figure><img src='{source}' alt='{_e(caption)}'><figcaption>{_e(caption)} <code>{_e(name)}</code></figcaption></figure>"


def _header(s: dict[str, Any]) -> str:
    search = s["search"]
    rows = [
        ["dataset", s["dataset"]], ["budget", s["budget"]], ["seed", s["seed"]], ["labels", labelled_share(s["labelled_fraction"])], ["created", s["created"]],
        ["stages took", duration(s["wall_seconds"])], ["filter", s["filter"]],
        ["search", f"{search['sampler']} sampler, {search['scheduler_detail']}, {search['trials']} of {search['trials_planned']} trials, "
                   f"{search['trial_epochs']} trial-epochs, promote {search['promote']}"],
        ["versions", ", ".join(f"{k} {v}" for k, v in s["versions"].items())],
        ["git commit", s.get("git_commit") or "—"],
        ["run folder", s["run_dir"]],
    ]
    return f"<h1>{_e(s['name'])}</h1><p class='context'>ReGene hyperparameter search report</p>" + _table(["", ""], [[str(a), str(b)] for a, b in rows])


def _warnings(s: dict[str, Any]) -> str:
    if not s["warnings"]:
        return ""
    return "<div class='warnings'><strong>Worth a look</strong><ul>" + "".join(f"<li>{_e(w)}</li>" for w in s["warnings"]) + "</ul></div>"


def _stages(s: dict[str, Any]) -> str:
    rows = [[_e(st["stage"]), f"<span class='{_e(st['status'].replace(' ', '-') if st['status'] in ('done', 'failed', 'interrupted', 'running') else 'missing')}'>{_e(st['status'])}</span>",
             _e(duration(st["seconds"])), _e(st["headline"])] for st in s["stages"]]
    return "<h2>Stages</h2>" + _table(["stage", "status", "time", "headline"], rows, raw=True)


def _search(paths: RunPaths, s: dict[str, Any], figures: dict[str, Any]) -> str:
    if not paths.pareto.exists():
        return "<h2>Search</h2><p>No trial has reported yet.</p>"
    pareto = read_parquet(paths.pareto).to_pylist()
    trials = {t["trial_id"]: t for t in read_parquet(paths.trials).to_pylist()} if paths.trials.exists() else {}
    front = sorted((r for r in pareto if r["on_front"]), key=lambda r: (-r["accuracy"], r["decoder_mae"]))
    front_rows = [["★" if r["promoted"] else "", r["trial_id"], *(number(r[o], 4) for o in (*OBJECTIVES, "joint_score")), architecture(trials.get(r["trial_id"], {}))]
                  for r in front]
    all_rows = [[t["trial_id"], t.get("status") or "", number(t.get("accuracy"), 4), number(t.get("decoder_mae"), 4), number(t.get("latent_sparsity"), 4),
                 str(t.get("epochs") or 0), duration(t.get("seconds")), architecture(t), t.get("stop_reason") or t.get("error") or ""] for t in trials.values()]
    parts = [
        "<h2>Search</h2>",
        _figure(paths, "figures/front.png", RUN_FIGURES["figures/front.png"], figures),
        "<h3>The front in parallel coordinates</h3>",
        parallel_coordinates(pareto),
        f"<h3>Front ({len(front)} of {len(pareto)} trials; ★ promoted)</h3>",
        _table(["", "trial", *(OBJECTIVE_LABELS[o] for o in (*OBJECTIVES, "joint_score")), "encoder"], front_rows),
        f"<details><summary>All {len(all_rows)} trials</summary>"
        + _table(["trial", "status", "accuracy", "probe MAE", "sparsity", "epochs", "time", "encoder", "stop reason / error"], all_rows) + "</details>",
    ]
    parts += [_figure(paths, name, caption, figures) for name, caption in RUN_FIGURES.items() if name != "figures/front.png" and name != "figures/decoder-curves.png"]
    return "\n".join(parts)


def parallel_coordinates(pareto: list[dict[str, Any]], width: int = 760, height: int = 280) -> str:
    """An inline SVG: one polyline per trial over the objectives, each axis min-max scaled, better up."""
    axes = [(name, name == "accuracy" or name == "joint_score") for name in (*OBJECTIVES, "joint_score")]
    rows = [r for r in pareto if all(r.get(a) is not None and math.isfinite(r[a]) for a, _ in axes)]
    if not rows:
        return "<p>No trial with objectives yet.</p>"
    left, top, bottom = 70, 24, 30
    step = (width - 2 * left) / (len(axes) - 1)
    bounds = {a: (min(r[a] for r in rows), max(r[a] for r in rows)) for a, _ in axes}

    def y(axis: str, higher_better: bool, value: float) -> float:
        low, high = bounds[axis]
        share = 0.5 if high == low else (value - low) / (high - low)
        share = share if higher_better else 1 - share
        return top + (1 - share) * (height - top - bottom)

    lines = []
    for r in sorted(rows, key=lambda r: (r["on_front"], r["promoted"])):  # front and promoted drawn last, on top
        colour, stroke = ("#d4a017", 3) if r["promoted"] else ("#d62728", 1.6) if r["on_front"] else ("#b0b0b0", 1)
        points = " ".join(f"{left + i * step:.1f},{y(a, hb, r[a]):.1f}" for i, (a, hb) in enumerate(axes))
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='{stroke}' points='{points}'><title>{_e(r['trial_id'])}</title></polyline>")
    labels = []
    for i, (a, hb) in enumerate(axes):
        x = left + i * step
        low, high = bounds[a]
        best, worst = (high, low) if hb else (low, high)
        labels.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{height - bottom}' stroke='#444'/>"
                      f"<text x='{x:.1f}' y='{top - 8}' text-anchor='middle' font-size='12'>{_e(OBJECTIVE_LABELS[a])} {number(best, 4)}</text>"
                      f"<text x='{x:.1f}' y='{height - bottom + 16}' text-anchor='middle' font-size='12' fill='#666'>{number(worst, 4)}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' aria-label='parallel coordinates of the trials'>"
            + "".join(lines) + "".join(labels) + "</svg><p class='context'>Better is up on every axis; grey: dominated, red: front, gold: promoted.</p>")


def _promoted(paths: RunPaths, s: dict[str, Any], promoted: dict[str, Any], figures: dict[str, Any]) -> str:
    trial = promoted["trial_id"]
    config = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in promoted["config"].items()]
    objectives = [[OBJECTIVE_LABELS[k], number(v, 4)] for k, v in promoted["objectives"].items()]
    parts = [f"<h2>Promoted encoder {_e(trial)} <small>({_e(promoted['architecture'])})</small></h2>",
             "<div class='grid'><div><h3>Objectives at the search's end</h3>" + _table(["objective", "value"], objectives) + "</div>"
             "<div><h3>Configuration</h3>" + _table(["hyperparameter", "value"], config) + "</div></div>"]
    if promoted is s["promoted"][0]:
        parts.append(_figure(paths, "figures/decoder-curves.png", RUN_FIGURES["figures/decoder-curves.png"], figures))
    quality = next((q for q in s["quality"] if q["trial_id"] == trial and q.get("strategy", "convex") == "convex"), None)
    if quality:
        parts.append(_quality(quality))
    comparison = next((c for c in s.get("comparison", []) if c["trial_id"] == trial and len(c["strategies"]) > 1), None)
    if comparison:
        parts.append(_comparison(comparison))
    mine = sorted((name for name in figures if name.startswith(f"figures/{trial}/")), key=_natural)
    for pattern, caption in TRIAL_FIGURES:
        matches = [(name, m) for name in mine if (m := re.fullmatch(pattern, name.rsplit("/", 1)[1]))]
        drawn = [_figure(paths, name, caption.format(*m.groups()), figures) for name, m in matches]
        parts.append(drawn[0] if len(drawn) == 1 else f"<div class='grid'>{''.join(drawn)}</div>" if drawn else "")  # a family side by side
    return "\n".join(parts)


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _bar_cell(value: Any, row: dict[str, Any]) -> str:
    text = _e(number(value))
    if row["bar"] is None or value is None:
        return text
    return f"<span class='pass'>{text} ✓</span>" if value >= row["bar"] else f"<span class='fail'>{text} ✗</span>"


def _comparison(comparison: dict[str, Any]) -> str:
    rows = [[_e(r["label"]), *(_bar_cell(r["values"].get(strategy), r) for strategy in comparison["strategies"])] for r in comparison["table"]]
    return (f"<h3>Generation strategies compared (neutral features; the paper's bar: neutral accuracy ≥ {PAPER_BAR:g})</h3>"
            + _table(["metric", *comparison["strategies"]], rows, raw=True))


def _quality(quality: dict[str, Any]) -> str:
    rows = [[_e(r["label"]), *(_bar_cell(r["by_n"].get(n), r) for n in quality["ns"]), _bar_cell(r["all"], r)] for r in quality["table"]]
    extra = [[label, number(quality["run"].get(metric), 4)] for metric, label in RUN_METRICS]
    classes = [[c["name"], *(number(c["accept_rate_by_n"].get(n)) for n in quality["ns"]), number(c.get("neutral_acc_gen"))] for c in quality["classes"]]
    return (f"<h3>Generations against the paper's bar (neutral accuracy ≥ {PAPER_BAR:g})</h3>"
            + _table(["metric", *(f"n={n}" for n in quality["ns"]), "all"], rows, raw=True)
            + _table(["", ""], extra)
            + "<h3>By class, weakest first</h3>"
            + _table(["class", *(f"accepted n={n}" for n in quality["ns"]), "neutral accuracy"], classes))


def _agreement(s: dict[str, Any]) -> str:
    agreement = s["agreement"]
    if not agreement:
        return ""
    body = _e(agreement["reason"]) if agreement["reason"] else (
        "<ul>" + "".join(f"<li>{_e(v)}</li>" for v in agreement["verdicts"]) + "</ul>" + (f"<p>{_e(agreement['caveat'])}</p>" if agreement.get("caveat") else "")
    )
    return f"<h2>Do the search's cheap scores rank encoders as the results do?</h2><p>{body}</p>"


def _evaluation_table(paths: RunPaths) -> str:
    if not paths.evaluation.exists():
        return ""
    rows = read_parquet(paths.evaluation).to_pylist()
    shown = [[r.get("trial_id") or "", r.get("strategy") or "", r.get("subset") or "", r.get("scope") or "", "" if r.get("n") is None else str(r["n"]),
              "" if r.get("class") is None else str(r["class"]), r["metric"], number(r["value"], 4)] for r in rows]
    return (f"<h2>Evaluation</h2><details><summary>All {len(rows)} rows of evaluation.parquet</summary>"
            + _table(["trial", "strategy", "subset", "scope", "n", "class", "metric", "value"], shown) + "</details>")


def _other_figures(paths: RunPaths, figures: dict[str, Any]) -> str:
    rest = sorted((name for name, placed in figures.items() if not placed), key=_natural)
    if not rest:
        return ""
    return "<h2>Other figures</h2>" + "".join(_figure(paths, name, name.rsplit("/", 1)[1], figures) for name in rest)
