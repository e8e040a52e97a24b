"""Do the search's cheap scores rank encoders the way the expensive stages do? (`proxy.parquet`)

With K >= 3 promoted encoders (`--promote-top K`, `--promote front`) the evaluate stage ranks
them by each search-time score (`PROXIES`) and by each downstream result (`DOWNSTREAM`) and
measures how well the two orders agree: Kendall's tau-b and Spearman's rho (`ranks.py`, ties
handled). With K < 3 nothing is computed (three encoders give tau in steps of 2/3 already) and
`show` says so.

Orientation: every value is first made "higher is better" (a lower-is-better value is negated),
so a positive statistic always means the proxy ranks the encoders the way the downstream result
does: +1 the same order, -1 the reverse, 0 no relation. `orientation` is the sign applied to
the statistic of the values as stored (+1 when both are better in the same direction).

`proxy.parquet` has one row per (proxy, downstream) pair, columns `PROXY_COLUMNS` (results.py),
each described in docs/results.md.

Verdicts (`verdict`), one per objective, on the downstream result it stands in for (`HEADLINE`):
tau >= 0.6 "agrees" (issue 13's bar for the probe: 80% of encoder pairs in the same order),
tau < 0 "disagrees" (more pairs in the wrong order than the right one), "weak" in between.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ranks import kendall_tau_b, spearman_rho
from ..results import PROXY_COLUMNS, RunPaths, read_parquet

MIN_ENCODERS = 3
AGREES = 0.6
DISAGREES = 0.0
PROXIES = {"accuracy": "higher", "decoder_mae": "lower", "latent_sparsity": "lower", "joint_score": "higher", "promotion_order": "lower"}
DECODER_RESULTS = {"decoder_val_mae": ("val_mae", "lower"), "decoder_val_ssim": ("val_ssim", "higher")}
EVALUATION_RESULTS = {"accept_rate": "higher", "neutral_acc_gen": "higher", "fid_neutral_org_gen": "lower", "coverage": "higher"}
OPTIONAL = ("coverage",)  # a pair only when evaluation.parquet has it (runs before issue 14 do not)
DOWNSTREAM = {**{name: better for name, (_, better) in DECODER_RESULTS.items()}, **EVALUATION_RESULTS}
LABELS = {
    "decoder_val_mae": "final decoder MAE",
    "decoder_val_ssim": "final decoder SSIM",
    "accept_rate": "acceptance rate",
    "neutral_acc_gen": "neutral accuracy on generations",
    "fid_neutral_org_gen": "in-domain FID org-gen",
    "coverage": "coverage",
}
# What each search-time score stands in for: the probe for the full decoder; sparsity too (the
# paper: sparse latents starve the decoder); accuracy for class fidelity of generations; the
# combined scores, and the promotion built on them, for generation quality as a whole.
HEADLINE = {
    "accuracy": "neutral_acc_gen",
    "decoder_mae": "decoder_val_mae",
    "latent_sparsity": "decoder_val_mae",
    "joint_score": "fid_neutral_org_gen",
    "promotion_order": "fid_neutral_org_gen",
}


def not_computed(k: int) -> str:
    return f"not computed: {k} encoder(s) promoted, rank agreement needs >= {MIN_ENCODERS} (--promote-top K or --promote front)"


def promoted_scores(paths: RunPaths) -> dict[str, dict[str, float]]:
    """trial_id -> its search-time scores, in promotion order (runs before `promotion_order` keep file order)."""
    rows = [r for r in read_parquet(paths.pareto).to_pylist() if r["promoted"]]
    rows.sort(key=lambda r: (r.get("promotion_order") is None, r.get("promotion_order") or 0))
    return {r["trial_id"]: {name: _number(r.get(name)) for name in PROXIES} for r in rows}


def downstream_results(paths: RunPaths, trial_ids: list[str]) -> dict[str, dict[str, float]]:
    """trial_id -> its downstream results (NaN where a stage produced none, e.g. no accepted generation)."""
    out: dict[str, dict[str, float]] = {t: {name: np.nan for name in DOWNSTREAM} for t in trial_ids}
    last: dict[str, int] = {}
    for r in read_parquet(paths.decoder).to_pylist():
        regene = r.get("decoder") in (None, "regene")  # not the lr-livae decoder's rows (files before it have no column)
        if r["trial_id"] in out and regene and r["epoch"] >= last.get(r["trial_id"], 0):
            last[r["trial_id"]] = r["epoch"]
            out[r["trial_id"]].update({name: _number(r[column]) for name, (column, _) in DECODER_RESULTS.items()})
    for r in read_parquet(paths.evaluation).to_pylist():
        # The paper's generator judged after its filter (files from before the strategies have neither column).
        judged = r.get("strategy") in (None, "convex") and r.get("subset") in (None, "accepted")
        if r["trial_id"] in out and r["metric"] in EVALUATION_RESULTS and r["scope"] == "run" and judged:
            out[r["trial_id"]][r["metric"]] = _number(r["value"])
    return out


def agreement_rows(dataset: str, scores: dict[str, dict[str, float]], results: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per (proxy, downstream) pair over the encoders holding both values."""
    rows = []
    for downstream, down_better in DOWNSTREAM.items():
        if downstream in OPTIONAL and all(np.isnan(results[t][downstream]) for t in results):
            continue
        for proxy, proxy_better in PROXIES.items():
            if all(np.isnan(scores[t][proxy]) for t in scores):
                continue  # a run from before the proxy was recorded (promotion_order)
            ids = [t for t in scores if not np.isnan(scores[t][proxy]) and not np.isnan(results[t][downstream])]
            x = [scores[t][proxy] for t in ids]
            y = [results[t][downstream] for t in ids]
            orientation = 1 if proxy_better == down_better else -1
            enough = len(ids) >= MIN_ENCODERS
            rows.append(
                {
                    "proxy": proxy,
                    "proxy_better": proxy_better,
                    "downstream": downstream,
                    "downstream_better": down_better,
                    "k": len(ids),
                    "kendall_tau": orientation * kendall_tau_b(x, y) + 0.0 if enough else np.nan,  # + 0.0: no -0.0
                    "spearman_rho": orientation * spearman_rho(x, y) + 0.0 if enough else np.nan,
                    "orientation": orientation,
                    "trial_ids": ids,
                    "dataset": dataset,
                }
            )
    return rows


def write_agreement(paths: RunPaths, dataset: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write proxy.parquet when >= 3 encoders were promoted; (the evaluate stage's summary of it, its rows)."""
    scores = promoted_scores(paths)
    if len(scores) < MIN_ENCODERS:
        return {"k": len(scores), "written": False, "reason": not_computed(len(scores))}, []
    rows = agreement_rows(dataset, scores, downstream_results(paths, list(scores)))
    paths.write_table(rows, PROXY_COLUMNS, paths.proxy)
    tau = {r["proxy"]: None if np.isnan(r["kendall_tau"]) else r["kendall_tau"] for r in headline_rows(rows)}
    return {"k": len(scores), "written": True, "tau": tau}, rows


def chance_caveat(k: int) -> str:
    """What a rank statistic over only K encoders can say ("" when K is not the minimum)."""
    return "K=3: tau moves in steps of 2/3, a perfect order happens by chance 1 time in 6" if k == MIN_ENCODERS else ""


def verdict(row: dict[str, Any], *, caveat: bool = True) -> str:
    """One line on a (proxy, downstream) row: agrees / weak / disagrees, or why there is no statistic;
    `caveat=False` leaves `chance_caveat` out (said once for several verdicts)."""
    proxy, label, k = row["proxy"], LABELS.get(row["downstream"], row["downstream"]), row["k"]
    tau, rho = row["kendall_tau"], row["spearman_rho"]
    if k < MIN_ENCODERS:
        return f"{proxy}: not computed against {label}: only {k} encoder(s) have both values (needs {MIN_ENCODERS})"
    if tau is None or np.isnan(tau):
        return f"{proxy}: undefined against {label}: one of the two is the same for all K={k} encoders"
    word = "agrees with" if tau >= AGREES else "disagrees with" if tau < DISAGREES else "weak against"
    said = chance_caveat(k) if caveat else ""
    return f"{proxy}: {word} {label} (tau {tau:+.2f}, rho {rho:+.2f}, K={k})" + (f"; {said}" if said else "")


def headline_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The row each objective's verdict is on, in `PROXIES` order."""
    by_pair = {(r["proxy"], r["downstream"]): r for r in rows}
    return [by_pair[(p, d)] for p, d in HEADLINE.items() if (p, d) in by_pair]


def _number(value: Any) -> float:
    return float(value) if value is not None else np.nan
