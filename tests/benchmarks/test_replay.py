"""benchmarks/replay.py on synthetic tables: the nearest rule, simulated time, Tune's call order."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from regene_search.search.pareto import hypervolume, to_minimisation
from regene_search.search.pareto_asha import ParetoASHA
from regene_search.search.schedulers import RecordingASHA
from regene_search.search.space import load_space
from regene_search.search.tuner import DIVERGED_METRICS, SearchSettings, make_searcher, quiet_tune_output

from .synthetic_table import write_table

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import replay as rp  # noqa: E402
import search_efficiency as se  # noqa: E402

SPACE_TOML = """
[params]
latent_activation = { choice = ["relu", "gelu"] }
latent_dim = { choice = [64, 256] }
lr = { loguniform = [1e-4, 1e-2] }
dropout = { uniform = [0.0, 0.4] }
blocks = { randint = [2, 4] }
[fixed]
augment = false
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE_TOML)
    return rp.searched_space(load_space(path), epochs=3)


@pytest.fixture(autouse=True)
def _quiet():
    quiet_tune_output()


def searcher(sampler="random", *, workers=1, seed=0, trials=8):
    return make_searcher(SearchSettings(trials=trials, sampler=sampler, max_concurrent=workers, seed=seed))


def write_rows(path: Path, configs: list[dict], epochs: int = 1) -> rp.Table:
    rows = [{"config_id": i, **{f"param_{k}": v for k, v in c.items()}, "param_epochs": epochs, "epoch": e, "accuracy": 0.5,
             "decoder_mae": 0.1, "latent_sparsity": 0.0, "joint_score": 0.3, "train_seconds": 1.0, "probe_seconds": 1.0,
             "seconds": 2.0 * e, "cpu_seconds": 2.0, "status": "done", "dataset": "synthetic"}
            for i, c in enumerate(configs) for e in range(1, epochs + 1)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rp.Table.load(path)


# --- the nearest-configuration rule ---------------------------------------------------------------

BASE = {"latent_activation": "relu", "latent_dim": 64, "lr": 1e-3, "dropout": 0.2, "blocks": 3}


def test_an_exact_configuration_is_its_own_nearest(tmp_path, space):
    configs = [BASE | {"lr": 1e-4}, BASE, BASE | {"blocks": 2}]
    table = write_rows(tmp_path / "t_curves.parquet", configs)
    for i, config in enumerate(configs):
        assert table.nearest(config, space) == i


def test_distances_are_normalised_per_parameter(tmp_path, space):
    # lr one decade away = 1/2 of its log-range; dropout 0.1 away = 1/4 of its range; blocks 1 of 2 = 1/2
    table = write_rows(tmp_path / "t_curves.parquet", [BASE | {"lr": 1e-2}, BASE | {"dropout": 0.3}, BASE | {"blocks": 4}])
    assert table.nearest(BASE, space) == 1
    # a categorical mismatch (1) costs more than lr 1.5 decades (0.75), even for a numeric choice
    table = write_rows(tmp_path / "u_curves.parquet", [BASE | {"latent_dim": 256}, BASE | {"lr": 10**-1.5}])
    assert table.nearest(BASE, space) == 1


def test_ties_go_to_the_lowest_config_id(tmp_path, space):
    table = write_rows(tmp_path / "t_curves.parquet", [BASE | {"latent_dim": 256}, BASE | {"latent_activation": "gelu"}])
    assert table.nearest(BASE, space) == 0


def test_excluded_configurations_are_skipped_until_none_is_left(tmp_path, space):
    table = write_rows(tmp_path / "t_curves.parquet", [BASE, BASE | {"lr": 1e-2}, BASE | {"blocks": 2}])
    assert table.nearest(BASE, space, {0}) == 1  # lr one decade (1/2) ties blocks 1 of 2 (1/2): the lowest id
    assert table.nearest(BASE, space, {0, 2}) == 1
    assert table.nearest(BASE, space, {0, 1, 2}) == 0  # all run: the plain nearest again


def test_fresh_matching_runs_each_configuration_once_before_repeating_any(tmp_path, space):
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=6, epochs=2))
    nearest = rp.replay(table, searcher(trials=12, seed=1), FIFOScheduler(), workers=2, space=space, max_trials=12)
    fresh = rp.replay(table, searcher(trials=12, seed=1), FIFOScheduler(), workers=2, space=space, max_trials=12, match="fresh")
    assert len({t.config_id for t in nearest.trials[:6]}) < 6  # random draws repeat recorded curves under "nearest"
    assert sorted(t.config_id for t in fresh.trials[:6]) == list(range(6))
    assert len(fresh.trials) == 12  # then repeats are allowed
    with pytest.raises(ValueError, match="match must be one of"):
        rp.replay(table, searcher(), FIFOScheduler(), workers=1, space=space, max_trials=1, match="closest")


# --- the table -------------------------------------------------------------------------------------


def test_reports_are_what_the_trainable_reports_and_diverged_configs_end_as_it_does(tmp_path, space):
    path = write_table(tmp_path / "s_curves.parquet", space, configs=4, epochs=3, diverged={1: 2, 2: 0}, cost=4.0)
    table = rp.Table.load(path)
    assert table.epochs == 3 and sorted(table.results) == [0, 1, 2, 3]  # config 2 comes from s_configs.parquet
    first = table.reports(0)[0]
    assert set(first) == {"epoch", "accuracy", "decoder_mae", "latent_sparsity", "joint_score", "train_seconds",
                          "probe_seconds", "planned_epochs", "diverged"}
    assert [r["epoch"] for r in table.reports(0)] == [1, 2, 3] and first["planned_epochs"] == 3 and first["diverged"] is False
    assert [r.get("epoch") for r in table.reports(1)] == [1, 2, None]
    for cid in (1, 2):
        last = table.reports(cid)[-1]
        assert last["diverged"] is True and {k: last[k] for k in DIVERGED_METRICS} == DIVERGED_METRICS
    assert list(table.costs[2]) == [4.0]  # no recorded epoch: the table's median epoch cost
    table.reports(0)[0]["accuracy"] = -1
    assert table.reports(0)[0]["accuracy"] != -1  # copies


def test_wall_seconds_are_differenced_per_epoch(tmp_path, space):
    path = write_table(tmp_path / "s_curves.parquet", space, configs=2, epochs=3)
    cpu, wall = rp.Table.load(path), rp.Table.load(path, cost="seconds")
    for cid in (0, 1):
        np.testing.assert_allclose(wall.costs[cid], cpu.costs[cid])  # the synthetic wall clock is cpu time
        assert len(wall.costs[cid]) == 3


# --- the simulated search --------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "seconds"), [(1, 120.0), (2, 60.0), (4, 30.0)])
def test_fifo_runs_every_trial_to_the_end_on_w_workers(tmp_path, space, workers, seconds):
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=10, epochs=3, cost=10.0))
    result = rp.replay(table, searcher(workers=workers), FIFOScheduler(), workers=workers, space=space, max_trials=4)
    assert len(result.trials) == 4 and all(t.end == "finished" and t.reported == 3 for t in result.trials)
    assert result.seconds == seconds  # 4 trials x 3 epochs x 10 s, W at a time
    times = [r["time"] for r in result.reports]
    assert times == sorted(times) and len(times) == 12
    assert max(sum(t.started <= now < t.ended for t in result.trials) for now in times) <= workers


def test_the_trial_epoch_budget_ends_the_search(tmp_path, space):
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=10, epochs=3))
    result = rp.replay(table, searcher(workers=2), FIFOScheduler(), workers=2, space=space, trial_epoch_budget=7)
    assert len(result.reports) == 7 and [r["trial_epochs"] for r in result.reports] == list(range(1, 8))
    assert sum(t.end == "cut" for t in result.trials) >= 1


def test_the_searcher_is_told_each_trials_last_result(tmp_path, space):
    """ASHA stops some trials early; Optuna must get exactly the last reported objectives of each."""
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=20, epochs=3))
    limiter = searcher("tpe", workers=2, trials=12)
    scheduler = RecordingASHA(time_attr="epoch", metric="joint_score", mode="max", max_t=3, grace_period=1, reduction_factor=2)
    result = rp.replay(table, limiter, scheduler, workers=2, space=space, max_trials=12)
    ends = [t.end for t in result.trials]
    assert "stopped" in ends and "finished" in ends
    study = limiter.searcher._ot_study.trials
    assert len(study) == 12
    for trial, told in zip(result.trials, study):  # trial ids are suggested in order, so study order = trial order
        last = trial.last_result
        assert told.values == [last["accuracy"], last["decoder_mae"], last["latent_sparsity"]]
        assert {k: told.params[k] for k in space.params} == {k: trial.config[k] for k in space.params}
        stopped_by_rung = [r for r in result.reports if r["trial"] == trial.index and r["decision"] == TrialScheduler.STOP]
        assert (trial.end == "stopped") == (bool(stopped_by_rung) and trial.reported < 3)


def test_a_diverged_result_stops_the_trial_under_pareto_asha(tmp_path, space):
    path = write_table(tmp_path / "s_curves.parquet", space, configs=1, epochs=3, diverged={0: 1})
    table = rp.Table.load(path)
    scheduler = ParetoASHA(max_t=3)
    result = rp.replay(table, searcher(), scheduler, workers=1, space=space, max_trials=1)
    assert [r["decision"] for r in result.reports] == ["CONTINUE", "STOP"]
    assert [(t.reported, t.end) for t in result.trials] == [(2, "diverged")]
    assert [d["failure"] is not None for d in scheduler.decisions] == [False, True]


class PauseOnce(FIFOScheduler):
    """Pauses every trial once, after its first result."""

    def __init__(self):
        super().__init__()
        self.paused = set()

    def on_trial_result(self, tune_controller, trial, result):
        if trial.trial_id in self.paused:
            return TrialScheduler.CONTINUE
        self.paused.add(trial.trial_id)
        return TrialScheduler.PAUSE


def test_a_paused_trial_resumes_at_its_next_epoch_when_the_scheduler_chooses_it(tmp_path, space):
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=4, epochs=3, cost=1.0))
    result = rp.replay(table, searcher(workers=2), PauseOnce(), workers=1, space=space, max_trials=2)
    # FIFO's choose_trial_to_run: pending trials first, then paused ones in order
    assert [(r["trial"], r["epoch"]) for r in result.reports] == [(0, 1), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert result.seconds == 6.0 and all(t.end == "finished" for t in result.trials)


# --- the comparison driver's pieces -----------------------------------------------------------------


def test_hypervolume_curve_equals_the_hypervolume_of_each_trials_latest_point():
    rng = np.random.default_rng(0)
    reports, latest = [], {}
    expected = []
    for _ in range(300):
        trial = int(rng.integers(12))
        diverged = bool(rng.uniform() < 0.05)
        point = {"accuracy": float(rng.uniform(0.3, 1)), "decoder_mae": float(rng.uniform(0, 0.6)),
                 "latent_sparsity": float(rng.choice([0.0, rng.uniform(0, 1)]))}
        reports.append({"trial": trial, "diverged": diverged, **point})
        latest[trial] = np.full(3, np.nan) if diverged else to_minimisation(np.array([list(point.values())]))[0]
        expected.append(hypervolume(np.array(list(latest.values()))))
    np.testing.assert_allclose(se.hypervolume_curve(reports), expected, rtol=0, atol=1e-12)


def test_rank_agreement_is_one_at_the_last_epoch_and_follows_the_curves(tmp_path, space):
    table = rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=30, epochs=4, diverged={3: 2}))
    agreement = se.rank_agreement(table)
    assert list(agreement["epoch"]) == [1, 2, 3, 4]
    assert np.allclose(agreement.iloc[-1][["accuracy", "decoder_mae", "joint_score"]], 1.0)
    import pandas as pd

    full = [c for c in table.results if c != 3]
    first = pd.Series([table.results[c][0]["accuracy"] for c in full])
    last = pd.Series([table.results[c][-1]["accuracy"] for c in full])
    assert math.isclose(agreement.iloc[0]["accuracy"], first.rank().corr(last.rank()))


def test_search_efficiency_runs_end_to_end_on_a_small_table(tmp_path, space, capsys, monkeypatch):
    path = write_table(tmp_path / "small_curves.parquet", space, configs=12, epochs=4)
    monkeypatch.setattr(rp.Table, "space", lambda self: rp.searched_space(load_space(tmp_path / "space.toml"), self.epochs))
    assert se.main(["--table", str(path), "--seeds", "2", "--trials", "4", "--jobs", "1", "--out", str(tmp_path / "out"),
                    "--methods", "random-fifo", "tpe-pareto-asha"]) == 0
    out = capsys.readouterr().out
    assert "random-fifo" in out and "tpe-pareto-asha" in out and "worst paired gap" in out and "Spearman" in out
    for suffix in ("parquet", "png", "json"):
        assert (tmp_path / "out" / f"search_efficiency_small_curves.{suffix}").stat().st_size > 0
    frame = pd_read(tmp_path / "out" / "search_efficiency_small_curves.parquet")
    assert set(frame["workers"]) == {2, 16} and frame.groupby(["method", "seed", "workers"])["trial_epochs"].max().eq(16).all()
    # the noise floor: random-FIFO again on seeds 2-3, 2 workers only, other draws than seeds 0-1
    again = frame[frame["method"] == "random-fifo, seeds 2-3"]
    assert "random-fifo, seeds 2-3" in out and set(again["workers"]) == {2} and set(again["seed"]) == {0, 1}
    first = frame[(frame["method"] == "random-fifo") & (frame["workers"] == 2)]
    assert list(again.sort_values(["seed", "trial_epochs"])["config_id"]) != list(first.sort_values(["seed", "trial_epochs"])["config_id"])


def test_method_names_carry_the_rungs():
    assert se.Method.parse("random-fifo") == se.Method("random-fifo", "random", "fifo", 1, 2.0)
    assert se.Method.parse("tpe-epsnet-asha-g3-r3") == se.Method("tpe-epsnet-asha-g3-r3", "tpe", "epsnet-asha", 3, 3.0)
    scheduler = se.Method.parse("random-pareto-asha-g2-r3").scheduler_for(12)
    assert isinstance(scheduler, ParetoASHA) and scheduler.milestones == [2, 6]
    asha = se.Method.parse("random-asha-g4").scheduler_for(12)
    assert isinstance(asha, RecordingASHA) and sorted(m for m, _ in asha._brackets[0]._rungs) == [4, 8]
    for bad in ("random-fifo-g2", "cmaes-fifo", "random-hyperband", "random-asha-g"):
        with pytest.raises(Exception, match="method"):
            se.Method.parse(bad)


def pd_read(path):
    import pandas as pd

    return pd.read_parquet(path)


def test_gaps_below_the_baseline_are_read_from_the_median_curves_and_from_the_same_seeds():
    baseline = np.array([[0.1, 0.5, 0.9], [0.2, 0.6, 0.5], [0.3, 0.7, 0.7]])
    # each seed one step later in the draw's luck: never below on its own seed, below on the medians
    better = np.array([[0.1, 0.5, 0.9], [0.2, 0.65, 0.52], [0.3, 0.7, 0.7]])
    shuffled = better[[2, 0, 1]]
    same = se.gaps_below(better, baseline)
    assert same["paired"] == 0.0 and same["share_at_or_above"] == 1.0 and math.isclose(same["median_curves"], 0.0)
    other = se.gaps_below(shuffled, baseline)
    assert math.isclose(other["median_curves"], 0.0, abs_tol=1e-12)  # the median ignores which seed is which ...
    assert math.isclose(other["paired"], 0.18) and math.isclose(other["share_at_or_above"], 1 / 3)  # ... the pairing does not
    lower = se.gaps_below(baseline - [0.0, 0.01, 0.03], baseline)
    assert math.isclose(lower["median_curves"], 0.03) and math.isclose(lower["paired"], 0.03) and lower["share_at_or_above"] == 0.0
