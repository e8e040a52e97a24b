"""A run at a glance, as one JSON-able dict: what `show`, `show --json` and `report.html` all render.

Built only from the run folder's files (run.json, stages.json and the Parquet tables), so it
works on a run under way, a failed one, or one written by an older version (absent parts are
absent, never guessed).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .config import STAGES, RunSpec, asha_rungs
from .results import RunPaths, read_parquet, read_run_record, read_stages
from .search.pareto import OBJECTIVES
from .stages import proxy

PAPER_BAR = 0.9  # ReGene Fig. 4: neutral accuracy on accepted generations; also the judge we trust
OBJECTIVE_LABELS = {"accuracy": "accuracy", "decoder_mae": "probe MAE", "latent_sparsity": "sparsity", "joint_score": "joint score"}
# The metric x n table: (evaluation metric, label, the paper's bar or None, higher is better)
QUALITY_METRICS = (
    ("neutral_acc_gen", "neutral accuracy on generations", PAPER_BAR, True),
    ("accept_rate", "accepted by the two-step filter", None, True),
    ("accepted_count", "accepted generations", None, True),
    ("fid_neutral_org_gen", "FID test vs generations (neutral features)", None, False),
    ("fid_neutral_recon_gen", "FID reconstructions vs generations", None, False),
)
# The strategy comparison, metric rows x strategy columns: (metric, subset, label, bar, higher is better).
COMPARISON_METRICS = (
    ("neutral_acc_gen", "accepted", "neutral accuracy on accepted generations", PAPER_BAR, True),
    ("neutral_acc_gen", "all", "neutral accuracy on all generations (before the filter)", None, True),
    ("accept_rate", None, "accepted by the two-step filter", None, True),
    ("fid_neutral_org_gen", "accepted", "FID test vs accepted generations (neutral features)", None, False),
    ("fid_neutral_org_gen", "all", "FID test vs all generations", None, False),
    ("fid_neutral_recon_gen", "accepted", "FID reconstructions vs accepted generations", None, False),
    ("kid_neutral_org_gen", "accepted", "KID test vs accepted generations", None, False),
    ("precision", "accepted", "precision (accepted)", None, True),
    ("recall", "accepted", "recall (accepted)", None, True),
    ("density", "accepted", "density (accepted)", None, True),
    ("coverage", "accepted", "coverage (accepted)", None, True),
    ("coverage", "all", "coverage (all)", None, True),
)
RUN_METRICS = (
    ("recon_mae", "reconstruction MAE (test, pixels in [0, 1])"),
    ("recon_ssim", "reconstruction SSIM"),
    ("neutral_acc_recon", "neutral accuracy on reconstructions"),
    ("fid_neutral_org_recon", "FID test vs reconstructions"),
    ("novelty_nn_l2_mean", "mean L2 of a generation to its nearest training image"),
    ("novelty_test_nn_l2_mean", "mean L2 of a test image to its nearest training image (for scale)"),
    ("novelty_nn_ssim_max", "highest SSIM of a generation to a training image"),
)


def run_summary(run_dir: Any) -> dict[str, Any]:
    paths = RunPaths.existing(run_dir)
    record = read_run_record(paths)
    stages = read_stages(paths)
    spec = record["spec"]
    trials = _rows(paths.trials)
    pareto = _rows(paths.pareto)
    evaluation = _rows(paths.evaluation)
    promoted = sorted((r for r in pareto if r.get("promoted")), key=lambda r: r.get("promotion_order") or 0)
    by_id = {t["trial_id"]: t for t in trials}
    class_names = _class_names(paths)
    summary = {
        "run_dir": str(paths.dir),
        "name": paths.dir.name,
        "dataset": spec.get("dataset"),
        "budget": spec.get("budget"),
        "seed": record.get("seed"),
        "labelled_fraction": spec.get("labelled_fraction", 1.0),  # a run.json from before semi-supervised runs: every label
        "filter": filter_rule(spec),
        "created": record.get("created"),
        "git_commit": record.get("git_commit"),
        "versions": record.get("versions", {}),
        "search": {
            "sampler": spec.get("sampler"),
            "scheduler": spec.get("scheduler"),
            "scheduler_detail": scheduler_text(spec, (record.get("budget") or {}).get("max_epochs")),
            "trials_planned": planned_trials(spec, record),
            "trials": len(trials),
            "statuses": _counts(t.get("status") for t in trials),
            "trial_epochs": sum(t.get("epochs") or 0 for t in trials),
            "max_epochs": (record.get("budget") or {}).get("max_epochs"),
            "promote": spec.get("promote"),
        },
        "wall_seconds": sum(s.get("seconds") or 0.0 for s in stages.values()),
        "stages": [_stage(name, stages.get(name), spec) for name in STAGES],
        "promoted": [_promoted(r, by_id.get(r["trial_id"], {})) for r in promoted],
        "quality": [_quality(t, strategy, evaluation, class_names) for t, strategy in _judged(evaluation)],
        "comparison": [_comparison(t, evaluation) for t in dict.fromkeys(r["trial_id"] for r in evaluation if r.get("trial_id"))],
        "judge": _judge(evaluation, stages),
        "agreement": _agreement(paths, stages),
    }
    summary["warnings"] = warnings(summary, stages)
    summary["report"] = str(paths.report_html) if paths.report_html.exists() else None
    summary["figures"] = sorted(f.relative_to(paths.dir) for f in paths.dir.files() if f.name.endswith((".png", ".svg"))) if (paths.dir / "figures").exists() else []
    return summary


def _rows(path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist() if path.exists() else []


def scheduler_text(spec: dict[str, Any], max_epochs: int | None = None) -> str | None:
    """The scheduler and, for an ASHA one, its rungs: "asha scheduler (one rung at epoch 2, 1 in 10 go on, 2 warm-up trials)"."""
    scheduler = spec.get("scheduler")
    if scheduler is None:
        return None
    if scheduler == "fifo":
        return "fifo scheduler"
    grace, rf, warmup = spec.get("grace_period", 1), spec.get("reduction_factor", 2.0), spec.get("warmup_trials") or 0
    rungs = asha_rungs(max_epochs, grace, rf) if max_epochs else None
    where = (f"first rung at epoch {grace}, 1 in {rf:g} go on" if rungs is None  # a run.json without its budget
             else "no rung before the last epoch" if not rungs
             else f"one rung at epoch {rungs[0]}, 1 in {rf:g} go on" if len(rungs) == 1
             else f"rungs at epochs {', '.join(map(str, rungs))}, 1 in {rf:g} go on at each")
    return f"{scheduler} scheduler ({where}" + (f", {warmup} warm-up trials)" if warmup else ")")


def planned_trials(spec: dict[str, Any], record: dict[str, Any]) -> int | None:
    try:
        return RunSpec.from_json(spec).resolved_trials  # under early stopping, more than the budget's trials
    except (TypeError, ValueError, KeyError):  # a run.json too old or too damaged to resolve
        return spec.get("trials") or (record.get("budget") or {}).get("trials")


def _counts(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _class_names(paths: RunPaths) -> dict[int, str]:
    if not paths.generations.exists():
        return {}
    table = read_parquet(paths.generations, columns=["class", "class_name"])
    return dict(zip(table.column("class").to_pylist(), table.column("class_name").to_pylist()))


def _stage(name: str, info: dict[str, Any] | None, spec: dict[str, Any]) -> dict[str, Any]:
    if info is None:
        status = "not started" if name in spec.get("stages", STAGES) else "not asked for"
        return {"stage": name, "status": status, "seconds": None, "estimated_seconds": None, "headline": ""}
    headline = info.get("reason") or stage_headline(name, info.get("summary") or {})
    return {"stage": name, "status": info["status"], "seconds": info.get("seconds"), "estimated_seconds": info.get("estimated_seconds"), "headline": headline}


def stage_headline(stage: str, summary: dict[str, Any]) -> str:
    """One line a person reads: the figures that say whether the stage went well."""
    if stage == "search" and summary:
        return (f"{summary.get('completed', 0)} of {summary.get('trials', 0)} trials finished, {summary.get('front_size', 0)} on the front, "
                f"hypervolume {summary.get('hypervolume', 0.0):.4f}; promoted {', '.join(summary.get('promoted', [])) or 'none'}")
    if stage == "decoder" and summary:
        parts = [f"{t}: val MAE {d['val_mae']:.4f}, SSIM {d['val_ssim']:.3f}" for t, d in (summary.get("decoders") or {}).items()]
        return f"{summary.get('epochs')} epochs; " + "; ".join(parts)
    if stage == "generate" and summary:
        def accepted(d: dict[str, Any]) -> str:
            return f"{d['accepted']} of {d['generated']} accepted ({d['accept_rate']:.1%})" if d.get("generated") else "nothing generated"

        parts = [
            # One strategy: the line as before the strategies (show must stay one screen).
            f"{t}: " + (", ".join(f"{name} {accepted(info)}" for name, info in d["strategies"].items()) if len(d.get("strategies", {})) > 1 else accepted(d))
            for t, d in (summary.get("trials") or {}).items()
        ]
        return "; ".join(parts)
    if stage == "evaluate" and summary:
        parts = [f"{t} {d['neutral_acc_gen']:.3f}" for t, d in (summary.get("trials") or {}).items() if "neutral_acc_gen" in d]
        judge = (summary.get("neutral") or {}).get("test_accuracy")
        return "; ".join(([f"judge test accuracy {judge:.3f}"] if judge is not None else []) + ([f"neutral accuracy on generations: {', '.join(parts)}"] if parts else []))
    return ""


def _promoted(pareto_row: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
    from .report import architecture

    return {
        "trial_id": pareto_row["trial_id"],
        "promotion_order": pareto_row.get("promotion_order"),
        "architecture": architecture(trial),
        "objectives": {name: pareto_row.get(name) for name in (*OBJECTIVES, "joint_score")},
        "epochs": trial.get("epochs"),
        "config": {k.removeprefix("param_"): v for k, v in trial.items() if k.startswith("param_")},
    }


def _scope(row: dict[str, Any]) -> str:
    """run / n / class / n_class, from which of n and class are set (older files have no `scope`)."""
    return row.get("scope") or {(False, False): "run", (True, False): "n", (False, True): "class", (True, True): "n_class"}[
        (row.get("n") is not None, row.get("class") is not None)
    ]


def _judged(evaluation: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(trial, strategy) of every set of generations judged; a file from before the strategies: convex."""
    pairs = {}
    for r in evaluation:
        if r.get("trial_id"):
            pairs.setdefault(r["trial_id"], {})
            if r.get("strategy"):
                pairs[r["trial_id"]][r["strategy"]] = None
    return [(t, s) for t, strategies in pairs.items() for s in (strategies or ["convex"])]


def _subset(row: dict[str, Any]) -> str | None:
    """A row's subset; a file from before the strategies judged the accepted generations only."""
    if row.get("strategy") is None and row["metric"] not in ("accept_rate", "accepted_count"):
        return row.get("subset") or "accepted"
    return row.get("subset")


def _comparison(trial_id: str, evaluation: list[dict[str, Any]]) -> dict[str, Any]:
    """One encoder's strategies side by side: metric rows x strategy columns (scope run)."""
    rows = [r for r in evaluation if r.get("trial_id") == trial_id and _scope(r) == "run"]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows if r.get("strategy"))) or ["convex"]
    table = []
    for metric, subset, label, bar, higher in COMPARISON_METRICS:
        # A file from before the strategies holds convex's rows without strategy or subset.
        values = {(r.get("strategy") or "convex"): r["value"] for r in rows if r["metric"] == metric and _subset(r) == subset}
        if values:
            table.append({"metric": metric, "subset": subset, "label": label, "bar": bar, "higher_is_better": higher, "values": values})
    return {"trial_id": trial_id, "strategies": strategies, "table": table}


def _quality(trial_id: str, strategy: str, evaluation: list[dict[str, Any]], class_names: dict[int, str]) -> dict[str, Any]:
    """One encoder's generations of one strategy after the filter: metric x n (n: convex only), run metrics, classes."""
    # Rows without a strategy: the encoder's own (reconstructions), or a file from before the strategies (convex).
    rows = [r for r in evaluation if r.get("trial_id") == trial_id and r.get("strategy") in (None, strategy) and r.get("subset") in (None, "accepted")]
    ns = sorted({int(r["n"]) for r in rows if r.get("n") is not None})
    table = []
    for metric, label, bar, higher in QUALITY_METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        by_n = {int(r["n"]): r["value"] for r in mine if _scope(r) == "n"}
        overall = next((r["value"] for r in mine if _scope(r) == "run"), None)
        if metric == "accepted_count" and overall is None and by_n:
            overall = sum(by_n.values())
        if by_n or overall is not None:
            table.append({"metric": metric, "label": label, "bar": bar, "higher_is_better": higher, "by_n": by_n, "all": overall})
    run_metrics = {metric: next((r["value"] for r in rows if r["metric"] == metric and _scope(r) == "run"), None) for metric, _ in RUN_METRICS}
    classes = {}
    for r in rows:
        if r.get("class") is None:
            continue
        entry = classes.setdefault(int(r["class"]), {"class": int(r["class"]), "name": class_names.get(int(r["class"]), str(r["class"])), "accept_rate_by_n": {}})
        if r["metric"] == "accept_rate" and _scope(r) == "n_class":
            entry["accept_rate_by_n"][int(r["n"])] = r["value"]
        elif r["metric"] == "accept_rate" and _scope(r) == "class":
            entry["accept_rate_of_class"] = r["value"]
        elif r["metric"] == "neutral_acc_gen" and _scope(r) == "class":
            entry["neutral_acc_gen"] = r["value"]
    for entry in classes.values():
        rates = entry["accept_rate_by_n"].values()
        # equal generations per (class, n); the class's own row for the other strategies (and older files' convex lacks it)
        entry["accept_rate"] = sum(rates) / len(rates) if rates else entry.pop("accept_rate_of_class", None)
        entry.pop("accept_rate_of_class", None)
    weakest_first = sorted(classes.values(), key=lambda c: (c.get("neutral_acc_gen", -1.0) if c.get("accept_rate") else -2.0, c["accept_rate"] or 0.0))
    return {"trial_id": trial_id, "strategy": strategy, "ns": ns, "table": table, "run": run_metrics, "classes": weakest_first}


def _judge(evaluation: list[dict[str, Any]], stages: dict[str, Any]) -> dict[str, Any] | None:
    accuracy = next((r["value"] for r in evaluation if r["metric"] == "neutral_test_accuracy"), None)
    if accuracy is None:
        return None
    neutral = ((stages.get("evaluate") or {}).get("summary") or {}).get("neutral") or {}
    # The dataset's own target (stages/neutral.py:JUDGE_TARGETS); a run from before the targets: the paper's bar.
    target = neutral.get("target", PAPER_BAR)
    return {"test_accuracy": accuracy, "depth": neutral.get("depth"), "recipe": neutral.get("recipe"), "target": target, "weak": neutral.get("weak", accuracy < target)}


def _agreement(paths: RunPaths, stages: dict[str, Any]) -> dict[str, Any] | None:
    if (stages.get("evaluate") or {}).get("status") != "done":
        return None
    if not paths.proxy.exists():
        return {"reason": ((stages["evaluate"].get("summary") or {}).get("proxy") or {}).get("reason", "not computed"), "verdicts": []}
    rows = read_parquet(paths.proxy).to_pylist()
    k = max((r["k"] for r in rows), default=0)
    return {"reason": None, "k": k, "verdicts": [proxy.verdict(r, caveat=False) for r in proxy.headline_rows(rows)], "caveat": proxy.chance_caveat(k)}


def filter_rule(spec: dict[str, Any]) -> str:
    """What the two-step filter held generations to, in a few words (a run.json from before the choice: the paper's)."""
    if spec.get("generate_threshold") is not None:
        rule = f"both steps at a fixed {spec['generate_threshold']:g}"
    elif spec.get("image_threshold", "holdout") == "holdout":
        rule = "the paper's: both steps at the holdout images' confidence"
    else:
        rule = "latent step at the holdout images' confidence, image step at their reconstructions'"
    if spec.get("min_image_confidence") is not None:
        rule += f"; image step at least {spec['min_image_confidence']:g} (stricter than the paper)"
    return rule


def warnings(summary: dict[str, Any], stages: dict[str, Any]) -> list[str]:
    """What deserves a user's attention, most serious first."""
    found = []
    for stage in summary["stages"]:
        if stage["status"] in ("failed", "interrupted", "running"):
            found.append(f"stage {stage['stage']} is {stage['status']}: {stage['headline'] or 'no reason recorded'}; continue with: regene-search run --resume {summary['run_dir']}")
    statuses = summary["search"]["statuses"]
    unfinished = statuses.get("RUNNING", 0) + statuses.get("PENDING", 0)
    if unfinished:
        found.append(f"the search has {unfinished} trial(s) not finished: the tables are live and nothing is promoted yet")
    failed = statuses.get("ERROR", 0) + statuses.get("DIVERGED", 0)
    if failed:
        found.append(f"{failed} trial(s) failed or diverged (trials.parquet `error`)")
    judge = summary["judge"]
    if judge and judge["weak"]:
        found.append(f"the neutral judge reaches only {judge['test_accuracy']:.3f} test accuracy (below this dataset's target of {judge['target']:g}): its verdict on the generations says little")
    near_copies = []
    for quality in summary["quality"]:
        trial = quality["trial_id"] if quality.get("strategy", "convex") == "convex" else f"{quality['trial_id']} {quality['strategy']}"
        gen_acc = next((row["all"] for row in quality["table"] if row["metric"] == "neutral_acc_gen"), None)
        if gen_acc is not None and gen_acc < PAPER_BAR:
            found.append(f"{trial}: neutral accuracy on generations {gen_acc:.3f} is below the paper's bar of {PAPER_BAR:g}")
        empty = [c["name"] for c in quality["classes"] if c["accept_rate"] == 0]
        if empty:
            found.append(f"{trial}: no generation of {', '.join(empty)} passed the filter: those classes have no images")
        near, test = quality["run"].get("novelty_nn_l2_mean"), quality["run"].get("novelty_test_nn_l2_mean")
        if near is not None and test is not None and near < test:
            near_copies.append((trial, quality["trial_id"], near, test))
    if len(near_copies) == 1:
        trial, trial_id, near, test = near_copies[0]
        found.append(f"{trial}: generations sit closer to the training set (mean nearest-neighbour L2 {near:.2f}) than real test images do ({test:.2f}): "
                     f"look at figures/{trial_id}/novelty.png for near-copies")
    elif near_copies:  # one line for them all: show stays one screen with several encoders
        pairs = ", ".join(f"{trial} {near:.2f} (test images {test:.2f})" for trial, _, near, test in near_copies)
        if len({f"{test:.2f}" for *_, test in near_copies}) == 1:  # the same test images for every encoder: say it once
            pairs = ", ".join(f"{trial} {near:.2f}" for trial, _, near, _ in near_copies) + f" (test images {near_copies[0][3]:.2f})"
        found.append(f"generations sit closer to the training set than real test images do, mean nearest-neighbour L2 {pairs}: see figures/TRIAL/novelty.png")
    agreement = summary["agreement"] or {}
    disagreements = [v for v in agreement.get("verdicts", []) if "disagrees" in v]
    if disagreements:  # one line: show stays one screen
        found.append("search scores disagree with the results: " + "; ".join(disagreements) + (f" ({agreement['caveat']})" if agreement.get("caveat") else ""))
    return found


def to_json(summary: dict[str, Any]) -> str:
    """Strict JSON: NaN and infinity become null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(summary), indent=2, allow_nan=False)
