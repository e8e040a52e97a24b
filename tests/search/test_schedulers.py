"""Scheduler stop reasons reach each trial's saved result, so they survive `Tuner.restore`."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from regene_search.config import SCHEDULERS, RunSpec
from regene_search.search.epsnet_asha import EpsNetParetoASHA
from regene_search.search.pareto_asha import ParetoASHA
from regene_search.search.schedulers import RecordingASHA, StopReasonCallback, make_scheduler

EPOCHS = 4


def _trainable(config):
    for epoch in range(1, EPOCHS + 1):
        tune.report({"epoch": epoch, "planned_epochs": EPOCHS, "joint_score": config["quality"] * epoch})


def test_asha_stop_reasons_are_saved_with_the_experiment(ray_instance, tmp_path):
    scheduler = RecordingASHA(time_attr="epoch", metric="joint_score", mode="max", max_t=EPOCHS, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        _trainable,
        param_space={"quality": tune.grid_search([0.9, 0.1, 0.8, 0.05, 0.02])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), callbacks=[StopReasonCallback(scheduler)], verbose=0),
    )
    live = {r.metrics["trial_id"]: r.metrics for r in tuner.fit()}
    stopped = {t for t, m in live.items() if m["epoch"] < EPOCHS}
    assert stopped and stopped == set(scheduler.stop_reasons), "ASHA stopped some trials, and each has a reason"

    # What a restarted driver sees: only what Tune saved, read back from the experiment folder.
    restored = {r.metrics["trial_id"]: r.metrics for r in tune.Tuner.restore(str(tmp_path / "exp"), _trainable).get_results()}
    assert {t for t, m in restored.items() if m.get("stop_reason")} == stopped
    for trial_id in stopped:
        assert restored[trial_id]["stop_reason"] == scheduler.stop_reasons[trial_id]
        assert restored[trial_id]["stop_reason"].startswith(f"asha: stopped at epoch {restored[trial_id]['epoch']}")


def test_every_cli_scheduler_name_builds_its_scheduler():
    expected = {"fifo": FIFOScheduler, "asha": RecordingASHA, "pareto-asha": ParetoASHA, "pareto-asha-epsnet": EpsNetParetoASHA}
    assert set(expected) == set(SCHEDULERS)
    for name, cls in expected.items():
        spec = RunSpec(dataset="mnist", data_dir=None, budget="default", name="x", results_root="/tmp", space_path="x.toml", scheduler=name)
        assert type(make_scheduler(spec)) is cls
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler(RunSpec(dataset="mnist", data_dir=None, budget="default", name="x", results_root="/tmp", space_path="x.toml", scheduler="hyperband"))


@pytest.mark.parametrize("name", ["asha", "pareto-asha", "pareto-asha-epsnet"])
def test_the_rung_knobs_reach_every_asha_scheduler(name):
    spec = RunSpec(dataset="mnist", data_dir=None, budget="default", name="x", results_root="/tmp", space_path="x.toml", scheduler=name, grace_period=2, reduction_factor=3.0)
    scheduler = make_scheduler(spec)
    assert _milestones(scheduler) == [2, 6]  # grace 2, then x3, below max_t = the default budget's 8 epochs


def _milestones(scheduler) -> list[float]:
    """The rung milestones of Tune's ASHA (its one bracket; Tune keeps them descending) or ours."""
    if isinstance(scheduler, RecordingASHA):
        return sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
    return scheduler.milestones
