"""Scheduler stop reasons reach each trial's saved result, so they survive `Tuner.restore`."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray import tune

from regene_search.config import SCHEDULERS, RunSpec
from regene_search.search.epsnet_asha import EpsNetParetoASHA
from regene_search.search.pareto_asha import ParetoASHA
from regene_search.search.schedulers import LeanASHA, RecordingASHA, RungRecords, StopReasonCallback, build_scheduler, make_scheduler
from regene_search.search.trial_choice import FIFO

EPOCHS = 4


def _trainable(config):
    for epoch in range(1, EPOCHS + 1):
        q = config["quality"]  # every objective agrees: a higher quality dominates
        tune.report({"epoch": epoch, "planned_epochs": EPOCHS, "joint_score": q * epoch, "accuracy": q * epoch / EPOCHS,
                     "decoder_mae": 1 - q, "latent_sparsity": 0.0})


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
    expected = {"fifo": FIFO, "asha": RecordingASHA, "pareto-asha": ParetoASHA, "pareto-asha-epsnet": EpsNetParetoASHA}
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


@pytest.mark.parametrize("kind", ["asha", "pareto-asha"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_no_trial_is_stopped_before_the_warmup_trials_have_run_to_the_end(ray_instance, tmp_path, kind, warmup):
    # one trial at a time: 0.9 runs first; 0.1 would be stopped at the first rung on 0.9's evidence
    scheduler = build_scheduler(kind, EPOCHS, grace_period=1, reduction_factor=2, warmup_trials=warmup)
    tuner = tune.Tuner(
        _trainable,
        param_space={"quality": tune.grid_search([0.9, 0.1, 0.8, 0.05, 0.02])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0),
    )
    epochs = {r.config["quality"]: r.metrics["epoch"] for r in tuner.fit()}
    if warmup:
        assert epochs == {0.9: EPOCHS, 0.1: EPOCHS, 0.8: EPOCHS, 0.05: 1, 0.02: 1}  # 0.8 beats 0.1 at every rung
    else:
        assert epochs[0.9] == EPOCHS and epochs[0.1] < EPOCHS and epochs[0.05] == epochs[0.02] == 1
    if kind == "pareto-asha":  # the decision log says which stops the warm-up overruled
        assert any(d.get("warmup") for d in scheduler.decisions) == bool(warmup)
    assert len(scheduler.stop_reasons) == sum(e < EPOCHS for e in epochs.values())


@pytest.mark.parametrize("kind", ["fifo", "asha", "pareto-asha"])
def test_the_next_trial_is_tunes_fifo_choice_made_without_reading_every_trial(ray_instance, tmp_path, kind, monkeypatch):
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.schedulers import FIFOScheduler

    scheduler = build_scheduler(kind, EPOCHS, grace_period=1, reduction_factor=2)
    reads, picks = [], []  # TuneController.get_trials calls; (our choice, Tune's FIFO choice, get_trials calls of ours)
    get_trials, choose = TuneController.get_trials, type(scheduler).choose_trial_to_run
    monkeypatch.setattr(TuneController, "get_trials", lambda self: (reads.append(1), get_trials(self))[1])

    def recorded(self, controller):
        before = len(reads)
        trial = choose(self, controller)
        read = len(reads) - before
        picks.append((trial, FIFOScheduler.choose_trial_to_run(self, controller), read))
        return trial

    monkeypatch.setattr(type(scheduler), "choose_trial_to_run", recorded)  # on the class: Tune pickles the scheduler
    qualities = [0.9, 0.1, 0.8, 0.05, 0.02, 0.7]
    tuner = tune.Tuner(
        _trainable,
        param_space={"quality": tune.grid_search(qualities)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0),
    )
    assert sorted(r.config["quality"] for r in tuner.fit()) == sorted(qualities)
    assert len({ours.trial_id for ours, _, _ in picks if ours is not None}) >= 3  # it chose, and more than the first trials
    assert all(ours is tunes for ours, tunes, _ in picks)
    assert all(read == 0 for _, _, read in picks)  # never by reading every trial of the experiment


def test_asha_gives_a_new_trial_its_one_bracket_without_a_draw_and_tunes_error_without_a_metric(monkeypatch):
    from ray.tune.experiment import Trial

    draws = []
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: draws.append(a) or 0)
    scheduler = build_scheduler("asha", EPOCHS, grace_period=1, reduction_factor=2)
    trial = Trial("__fake", stub=True, trial_id="t1")
    scheduler.on_trial_add(None, trial)
    assert scheduler._trial_info["t1"] is scheduler._brackets[0] and len(scheduler._brackets) == 1 and draws == []
    several = RecordingASHA(time_attr="epoch", metric="joint_score", mode="max", max_t=EPOCHS, brackets=2)
    several.on_trial_add(None, trial)
    assert len(draws) == 1 and several._trial_info["t1"] is several._brackets[0]  # Tune's draw, as before
    with pytest.raises(ValueError, match="metric"):
        RecordingASHA(time_attr="epoch", max_t=EPOCHS).on_trial_add(None, trial)


@settings(max_examples=300, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(0, 30), st.one_of(st.floats(-1, 1), st.sampled_from([0.0, 0.5, math.nan]))), max_size=80),
       rf=st.sampled_from([2, 3, 4, 10]))
def test_a_rungs_sorted_records_give_numpys_percentile_to_the_bit(writes, rf):
    records = RungRecords()
    for key, value in writes:  # a key written again (Tune never does) replaces its value
        records[f"t{key}"] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "all-NaN slice"
            expected = np.nanpercentile(list(records.values()), (1 - 1 / rf) * 100)
        assert records.percentile((1 - 1 / rf) * 100) == expected or (math.isnan(expected) and math.isnan(records.percentile((1 - 1 / rf) * 100)))
    assert records.sorted == sorted(v for v in records.values() if not math.isnan(v))


@pytest.mark.parametrize("grace, rf", [(1, 2), (1, 3), (2, 10)])
def test_lean_asha_decides_as_tunes_asha_and_survives_a_save(grace, rf):
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    rng = np.random.default_rng(grace * 10 + rf)
    kwargs = {"time_attr": "epoch", "metric": "joint_score", "mode": "max", "max_t": 16, "grace_period": grace, "reduction_factor": rf}
    tunes, lean = ASHAScheduler(**kwargs), LeanASHA(**kwargs)
    running: dict[str, int] = {}
    decisions = []
    for step in range(3000):
        if len(running) < 8:
            trial_id = f"t{step}"
            running[trial_id] = 0
            for scheduler in (tunes, lean):
                scheduler.on_trial_add(None, Trial("__fake", stub=True, trial_id=trial_id))
        trial_id = list(running)[int(rng.integers(len(running)))]
        running[trial_id] += 1
        score = float(rng.choice([rng.random(), round(rng.random(), 1)]))  # ties too
        result = {"epoch": running[trial_id], "joint_score": score}
        trial = Trial("__fake", stub=True, trial_id=trial_id)
        pair = (tunes.on_trial_result(None, trial, dict(result)), lean.on_trial_result(None, trial, dict(result)))
        decisions.append(pair)
        if pair[0] == "STOP" or running[trial_id] == 16:
            del running[trial_id]
            for scheduler in (tunes, lean):
                scheduler.on_trial_complete(None, trial, result)
        if step == 1500:  # Tune saving its state and a resume: the sorted records come back with it
            lean = pickle.loads(pickle.dumps(lean))
            tunes = pickle.loads(pickle.dumps(tunes))
    assert all(ours == theirs for theirs, ours in decisions)
    assert 0.2 < sum(theirs == "STOP" for theirs, _ in decisions) / len(decisions) < 0.9  # the rungs did stop trials
