"""A run at a glance: the summary `show`, `show --json` and report.html share, from run folders in known states."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest
from rich.console import Console

from regene_search.report import print_summary
from regene_search.summary import filter_rule, run_summary, to_json

from .conftest import CLI
from .run_folders import make_run


def shown(summary: dict) -> str:
    console = Console(record=True, width=200)
    print_summary(summary, console)
    return console.export_text()


def test_a_finished_run_gives_context_stages_the_promoted_trial_and_quality_by_n(tmp_path):
    summary = run_summary(make_run(tmp_path).dir)
    assert (summary["name"], summary["dataset"], summary["budget"]) == ("glance", "mnist", "smoke")
    assert summary["search"] | {"statuses": None} == {"sampler": "tpe", "scheduler": "fifo", "scheduler_detail": "fifo scheduler", "trials_planned": 3, "trials": 3, "statuses": None,
                                                      "trial_epochs": 6, "max_epochs": 2, "promote": "knee"}
    assert summary["wall_seconds"] == 115.0
    assert [s["status"] for s in summary["stages"]] == ["done"] * 4
    assert summary["stages"][1]["headline"] == "4 epochs; a: val MAE 0.0400, SSIM 0.800"
    [promoted] = summary["promoted"]
    assert promoted["trial_id"] == "a" and promoted["architecture"] == "3x1 w16 z64 relu"
    assert promoted["objectives"]["accuracy"] == 0.95 and promoted["config"]["lr"] == 1e-3
    [quality] = summary["quality"]
    assert quality["ns"] == [2, 3]
    table = {row["metric"]: row for row in quality["table"]}
    assert table["neutral_acc_gen"]["by_n"] == {2: 0.94, 3: 0.96} and table["neutral_acc_gen"]["all"] == 0.95 and table["neutral_acc_gen"]["bar"] == 0.9
    assert table["accepted_count"]["all"] == 100  # summed over n where the file has no overall row
    # Weakest class first: lowest neutral accuracy on its generations; names from generations.parquet.
    assert [c["name"] for c in quality["classes"]] == ["2 - two", "1 - one", "0 - zero"]
    assert quality["classes"][0]["accept_rate_by_n"] == {2: 0.9, 3: 0.9}
    assert summary["judge"] == {"test_accuracy": 0.97, "depth": 8, "recipe": None, "target": 0.9, "weak": False}  # a run from before per-dataset targets
    assert summary["warnings"] == []
    assert "figures/a/novelty.png" in summary["figures"]


def test_warnings_name_a_weak_judge_the_bar_an_empty_class_and_near_copies(tmp_path):
    summary = run_summary(make_run(tmp_path, judge=0.43, gen_accuracy=0.74, empty_class=1, novelty=(3.0, 4.5)).dir)
    text = "\n".join(summary["warnings"])
    assert "the neutral judge reaches only 0.430 test accuracy (below this dataset's target of 0.9)" in text
    assert "a: neutral accuracy on generations 0.740 is below the paper's bar of 0.9" in text
    assert "a: no generation of 1 - one passed the filter" in text
    assert "generations sit closer to the training set (mean nearest-neighbour L2 3.00) than real test images do (4.50)" in text
    assert summary["quality"][0]["classes"][0]["name"] == "1 - one"  # no generations at all: weakest of all


def test_a_judge_is_weak_against_its_datasets_own_target(tmp_path):
    run = make_run(tmp_path, judge=0.975)
    stages = json.loads(run.stages_json.read_bytes())
    stages["evaluate"]["summary"]["neutral"] |= {"recipe": "quick", "target": 0.98, "weak": True}
    run.stages_json.write_bytes(json.dumps(stages).encode())
    summary = run_summary(run.dir)
    assert summary["judge"] == {"test_accuracy": 0.975, "depth": 8, "recipe": "quick", "target": 0.98, "weak": True}
    assert "the neutral judge reaches only 0.975 test accuracy (below this dataset's target of 0.98)" in "\n".join(summary["warnings"])
    console = Console(record=True, width=200)
    print_summary(summary, console)
    assert "judge: neutral ResNet-8 (quick recipe), test accuracy 0.975 (weak: below 0.98)" in console.export_text()


def test_a_failed_stage_and_a_running_search_are_warned_with_what_to_do(tmp_path):
    failed = run_summary(make_run(tmp_path, failed_stage="decoder", name="failed").dir)
    assert [s["status"] for s in failed["stages"]] == ["done", "failed", "not started", "not started"]
    assert failed["warnings"][0].startswith("stage decoder is failed: RunDirError: checkpoints/classifier-a.pt is missing; continue with: regene-search run --resume ")
    running = run_summary(make_run(tmp_path, search_running=True, name="running").dir)
    assert running["promoted"] == [] and running["quality"] == []
    assert any("the search has 1 trial(s) not finished" in w for w in running["warnings"])


def test_show_marks_the_bar_and_prints_the_warnings(tmp_path):
    text = shown(run_summary(make_run(tmp_path, gen_accuracy=0.89).dir))
    assert "glance  mnist · budget smoke · seed 0" in text
    assert "promoted a  3x1 w16 z64 relu  accuracy 0.9500" in text
    line = next(line for line in text.splitlines() if line.startswith("neutral accuracy on generations"))
    assert "0.880 ✗" in line and "0.900 ✓" in line and "0.890 ✗" in line  # n=2, n=3, all
    assert "! a: neutral accuracy on generations 0.890 is below the paper's bar of 0.9" in text
    assert "weakest classes: 2 - two" in text


def test_show_json_is_strict_json_of_the_same_summary(tmp_path):
    paths = make_run(tmp_path)
    proc = subprocess.run([*CLI, "show", str(paths.dir), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == json.loads(to_json(run_summary(paths.dir)))
    assert data["promoted"][0]["trial_id"] == "a" and data["quality"][0]["table"][0]["by_n"] == {"2": 0.94, "3": 0.96}
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
    assert to_json({"x": math.nan, "y": [math.inf]}) == '{\n  "x": null,\n  "y": [\n    null\n  ]\n}'


def test_show_detail_keeps_the_full_dump_and_json_with_detail_is_refused(tmp_path):
    paths = make_run(tmp_path)
    detail = subprocess.run([*CLI, "show", str(paths.dir), "--detail"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert detail.returncode == 0, detail.stderr
    assert "trials.parquet: 3 rows" in detail.stdout and "figures:" in detail.stdout
    both = subprocess.run([*CLI, "show", str(paths.dir), "--detail", "--json"], capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr and "Traceback" not in both.stderr


def test_strategies_are_compared_in_one_table_metric_rows_by_strategy_columns_with_the_bar(tmp_path):
    from regene_search.results import EVALUATION_COLUMNS, read_parquet, table_from_rows, write_parquet

    paths = make_run(tmp_path)
    rows = read_parquet(paths.evaluation).to_pylist()
    for r in rows:  # the fixture's generation rows become convex's, after the filter
        if r["trial_id"] and not r["metric"].startswith(("recon", "novelty_test")):
            r["strategy"], r["subset"] = "convex", None if r["metric"] in ("accept_rate", "accepted_count") else "accepted"
    for strategy, accuracy, coverage in (("gaussian", 0.93, 0.7), ("lsdm", 0.81, 0.4)):
        for subset, shift in (("accepted", 0.0), ("all", -0.05)):
            rows += [{"dataset": "mnist", "trial_id": "a", "strategy": strategy, "subset": subset, "scope": "run", "metric": m, "value": v + shift}
                     for m, v in (("neutral_acc_gen", accuracy), ("coverage", coverage), ("kid_neutral_org_gen", 0.01))]
        rows.append({"dataset": "mnist", "trial_id": "a", "strategy": strategy, "scope": "run", "metric": "accept_rate", "value": 0.5})
        rows += [{"dataset": "mnist", "trial_id": "a", "strategy": strategy, "scope": "class", "class": c, "metric": "accept_rate", "value": 0.0 if (strategy, c) == ("lsdm", 1) else 0.5}
                 for c in range(3)]  # strategies without convex's n: acceptance by class alone
    write_parquet(table_from_rows(rows, EVALUATION_COLUMNS), paths.evaluation)
    summary = run_summary(paths.dir)
    [comparison] = summary["comparison"]
    assert comparison["strategies"] == ["convex", "gaussian", "lsdm"]
    table = {(row["metric"], row["subset"]): row for row in comparison["table"]}
    assert table[("neutral_acc_gen", "accepted")]["values"] == {"convex": 0.95, "gaussian": 0.93, "lsdm": 0.81}
    assert table[("neutral_acc_gen", "all")]["values"] == {"gaussian": 0.88, "lsdm": 0.76}
    assert table[("accept_rate", None)]["values"] == {"convex": 100 / 120, "gaussian": 0.5, "lsdm": 0.5}
    assert table[("coverage", "accepted")]["values"] == {"gaussian": 0.7, "lsdm": 0.4}
    # One quality entry per (trial, strategy); the below-bar warning names the strategy.
    assert [(q["trial_id"], q["strategy"]) for q in summary["quality"]] == [("a", "convex"), ("a", "gaussian"), ("a", "lsdm")]
    assert "a lsdm: neutral accuracy on generations 0.810 is below the paper's bar of 0.9" in "\n".join(summary["warnings"])
    assert "a lsdm: no generation of 1 - one passed the filter" in "\n".join(summary["warnings"])
    assert not any(w.startswith("a gaussian: no generation") for w in summary["warnings"])
    text = shown(summary)
    assert "a: strategies" in text
    line = next(t for t in text.splitlines() if t.startswith("neutral accuracy on accepted generations"))
    assert line.split()[-6:] == ["0.950", "✓", "0.930", "✓", "0.810", "✗"]


@pytest.mark.parametrize(
    "spec, rule",
    [
        ({}, "the paper's: both steps at the holdout images' confidence"),  # a run.json from before the choice
        ({"image_threshold": "holdout"}, "the paper's: both steps at the holdout images' confidence"),
        ({"image_threshold": "reconstructions"}, "latent step at the holdout images' confidence, image step at their reconstructions'"),
        ({"image_threshold": "reconstructions", "generate_threshold": 0.7}, "both steps at a fixed 0.7"),
        ({"image_threshold": "reconstructions", "min_image_confidence": 0.7},
         "latent step at the holdout images' confidence, image step at their reconstructions'; image step at least 0.7 (stricter than the paper)"),
    ],
)
def test_the_filter_rule_names_what_each_step_was_held_to(spec, rule):
    assert filter_rule(spec) == rule


def test_an_asha_run_names_its_rungs():
    from regene_search.summary import scheduler_text

    spec = {"scheduler": "asha", "grace_period": 2, "reduction_factor": 4.0, "warmup_trials": 2}
    assert scheduler_text(spec) == "asha scheduler (first rung at epoch 2, 1 in 4 go on, 2 warm-up trials)"  # no budget known
    assert scheduler_text(spec | {"warmup_trials": 0}, 8) == "asha scheduler (one rung at epoch 2, 1 in 4 go on)"  # 8 is the last epoch
    assert scheduler_text(spec, 60) == "asha scheduler (rungs at epochs 2, 8, 32, 1 in 4 go on at each, 2 warm-up trials)"
    assert scheduler_text(spec | {"grace_period": 8}, 8) == "asha scheduler (no rung before the last epoch, 2 warm-up trials)"
    assert scheduler_text({"scheduler": "fifo"}) == "fifo scheduler"
