"""proxy.parquet from a run folder of real Parquet files: columns, orientation, scipy values, verdicts, show."""

from __future__ import annotations

import math
import warnings

import pytest
from rich.console import Console
from scipy import stats

from regene_search.report import print_run
from regene_search.results import DECODER_COLUMNS, EVALUATION_COLUMNS, PARETO_COLUMNS, PROXY_COLUMNS, RunPaths, read_parquet, write_json
from regene_search.stages.evaluate import Metrics
from regene_search.stages.proxy import PROXIES, verdict, write_agreement

from ..conftest import new_run_folder

# Five promoted encoders (promotion order a, b, c, d, e) and one that was not promoted.
# decoder_mae orders them exactly as the final decoder MAE; accuracy the reverse of neutral accuracy.
SEARCH = {
    "a": dict(accuracy=0.95, decoder_mae=0.05, latent_sparsity=0.3, joint_score=0.7),
    "b": dict(accuracy=0.90, decoder_mae=0.06, latent_sparsity=0.3, joint_score=0.6),
    "c": dict(accuracy=0.97, decoder_mae=0.08, latent_sparsity=0.3, joint_score=0.5),
    "d": dict(accuracy=0.85, decoder_mae=0.07, latent_sparsity=0.3, joint_score=0.8),
    "e": dict(accuracy=0.80, decoder_mae=0.10, latent_sparsity=0.3, joint_score=0.4),
    "x": dict(accuracy=0.10, decoder_mae=0.90, latent_sparsity=0.9, joint_score=-2.0),
}
FINAL_MAE = {"a": 0.04, "b": 0.045, "c": 0.06, "d": 0.05, "e": 0.09}
FINAL_SSIM = {"a": 0.8, "b": 0.7, "c": 0.75, "d": 0.7, "e": 0.5}  # a tie: b, d
NEUTRAL_ACC = {"a": 0.90, "b": 0.95, "c": 0.85, "d": 0.97, "e": None}  # e accepted nothing
FID = {"a": 2.0, "b": 1.5, "c": 3.0, "d": 2.5, "e": 4.0}
ACCEPT = {"a": 0.9, "b": 0.8, "c": 0.95, "d": 0.7, "e": 0.3}


def make_run(tmp_path, promoted: list[str], *, coverage: bool = False, evaluate_summary: dict | None = None) -> RunPaths:
    paths = new_run_folder(tmp_path / "results", "mnist", "proxy")
    write_json({"spec": {"dataset": "mnist", "budget": "smoke"}, "seed": 0}, paths.run_json)
    write_json({"evaluate": {"status": "done", "seconds": 1.0, "summary": evaluate_summary or {}}}, paths.stages_json)
    order = {t: i + 1 for i, t in enumerate(promoted)}
    pareto = [
        {"trial_id": t, **v, "rank": 0, "crowding": 1.0, "on_front": True, "promoted": t in order, "promotion_score": 0.1 * order.get(t, 9), "promotion_order": order.get(t)}
        for t, v in reversed(list(SEARCH.items()))  # file order is not promotion order
    ]
    paths.write_table(pareto, PARETO_COLUMNS, paths.pareto)
    decoder = []
    for t in promoted:
        # Epoch 1 ranks the encoders the other way round: only the last epoch may be used.
        decoder.append({"trial_id": t, "epoch": 1, "val_mae": 1.0 - FINAL_MAE[t], "val_ssim": 0.0, "perceptual_backbone": "neutral-resnet"})
        decoder.append({"trial_id": t, "epoch": 2, "val_mae": FINAL_MAE[t], "val_ssim": FINAL_SSIM[t], "perceptual_backbone": "neutral-resnet"})
    paths.write_table(decoder, DECODER_COLUMNS, paths.decoder)
    evaluation = Metrics("mnist")  # the evaluate stage's own rows, `scope` included
    evaluation.add("neutral_test_accuracy", 0.97)
    for t in promoted:
        overall = {"accept_rate": ACCEPT[t], "neutral_acc_gen": NEUTRAL_ACC[t], "fid_neutral_org_gen": FID[t], **({"coverage": FID[t] / 10} if coverage else {})}
        for metric, value in overall.items():
            if value is not None:
                evaluation.add(metric, value, trial_id=t)
        # Per-n and per-class rows must not be mistaken for the overall value.
        evaluation.add("accept_rate", 1.0 - ACCEPT[t], trial_id=t, n=2)
        evaluation.add("fid_neutral_org_gen", -FID[t], trial_id=t, cls=3)
        evaluation.add("neutral_acc_gen", 0.0, trial_id=t, n=3, cls=1)
    paths.write_table(evaluation.rows, EVALUATION_COLUMNS, paths.evaluation)
    return paths


def scipy_stats(x, y) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def shown(paths: RunPaths) -> str:
    console = Console(record=True, width=250)
    print_run(paths.dir, console)
    return console.export_text()


def test_proxy_parquet_has_the_documented_columns_and_scipy_values(tmp_path):
    promoted = ["a", "b", "c", "d", "e"]
    paths = make_run(tmp_path, promoted)
    summary, _ = write_agreement(paths, "mnist")
    table = read_parquet(paths.proxy)
    assert table.schema == PROXY_COLUMNS and set(table.column("run").to_pylist()) == {"proxy"}
    rows = {(r["proxy"], r["downstream"]): r for r in table.to_pylist()}
    downstream = {"decoder_val_mae", "decoder_val_ssim", "accept_rate", "neutral_acc_gen", "fid_neutral_org_gen"}
    assert set(rows) == {(p, d) for p in PROXIES for d in downstream}  # no coverage metric, no coverage row
    assert summary["k"] == 5 and summary["written"]

    final = {"decoder_val_mae": FINAL_MAE, "decoder_val_ssim": FINAL_SSIM, "accept_rate": ACCEPT, "neutral_acc_gen": NEUTRAL_ACC, "fid_neutral_org_gen": FID}
    for (proxy, down), row in rows.items():
        ids = [t for t in promoted if final[down][t] is not None]
        assert row["trial_ids"] == ids and row["k"] == len(ids) and row["dataset"] == "mnist"
        x = [promoted.index(t) + 1 if proxy == "promotion_order" else SEARCH[t][proxy] for t in ids]
        tau, rho = scipy_stats(x, [final[down][t] for t in ids])
        sign = 1 if row["proxy_better"] == row["downstream_better"] else -1
        assert row["orientation"] == sign
        for ours, theirs in ((row["kendall_tau"], tau), (row["spearman_rho"], rho)):
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(sign * theirs), (proxy, down)

    # Oriented so that + means "ranks the encoders as the result does".
    assert rows[("decoder_mae", "decoder_val_mae")]["kendall_tau"] == pytest.approx(1.0)
    assert rows[("accuracy", "neutral_acc_gen")]["kendall_tau"] < 0  # the more accurate encoders generate worse here
    assert rows[("accuracy", "neutral_acc_gen")]["k"] == 4  # e has no accepted generation
    assert math.isnan(rows[("latent_sparsity", "decoder_val_mae")]["kendall_tau"])  # constant sparsity
    assert summary["tau"]["decoder_mae"] == pytest.approx(1.0) and summary["tau"]["latent_sparsity"] is None


def test_verdicts_name_the_objective_the_result_and_k(tmp_path):
    paths = make_run(tmp_path, ["a", "b", "c", "d", "e"])
    _, rows = write_agreement(paths, "mnist")
    by_pair = {(r["proxy"], r["downstream"]): r for r in rows}
    assert verdict(by_pair[("decoder_mae", "decoder_val_mae")]) == "decoder_mae: agrees with final decoder MAE (tau +1.00, rho +1.00, K=5)"
    assert verdict(by_pair[("accuracy", "neutral_acc_gen")]).startswith("accuracy: disagrees with neutral accuracy on generations (tau -")
    assert "undefined" in verdict(by_pair[("latent_sparsity", "decoder_val_mae")])
    weak = dict(by_pair[("decoder_mae", "decoder_val_mae")], kendall_tau=0.2, spearman_rho=0.3, k=3)
    assert verdict(weak) == "decoder_mae: weak against final decoder MAE (tau +0.20, rho +0.30, K=3); K=3: tau moves in steps of 2/3, a perfect order happens by chance 1 time in 6"
    assert "not computed" in verdict(dict(weak, k=2, kendall_tau=float("nan")))


def test_show_prints_the_agreement_and_a_verdict_per_objective(tmp_path):
    paths = make_run(tmp_path, ["a", "b", "c", "d", "e"])
    write_agreement(paths, "mnist")
    text = shown(paths)
    assert "rank agreement over K=5 promoted encoders" in text
    assert "decoder_mae: agrees with final decoder MAE (tau +1.00, rho +1.00, K=5)" in text
    for proxy in PROXIES:
        assert f"  {proxy}: " in text
    assert "proxy.parquet: 25 rows" in text


def test_coverage_is_a_downstream_result_where_it_exists(tmp_path):
    paths = make_run(tmp_path, ["a", "b", "c", "d", "e"], coverage=True)
    _, rows = write_agreement(paths, "mnist")
    coverage = [r for r in rows if r["downstream"] == "coverage"]
    assert len(coverage) == len(PROXIES) and all(r["downstream_better"] == "higher" for r in coverage)


def test_fewer_than_three_encoders_are_not_ranked_and_show_says_why(tmp_path):
    paths = make_run(tmp_path, ["a", "b"])
    summary, rows = write_agreement(paths, "mnist")
    assert rows == [] and not paths.proxy.exists()
    assert summary == {"k": 2, "written": False, "reason": summary["reason"]} and "needs >= 3" in summary["reason"]
    write_json({"evaluate": {"status": "done", "seconds": 1.0, "summary": {"proxy": summary}}}, paths.stages_json)
    assert "rank agreement of search scores with downstream results: not computed: 2 encoder(s) promoted, rank agreement needs >= 3" in shown(paths)
