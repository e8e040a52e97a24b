"""EpsNetParetoASHA: epsilon-net order inside fronts, on scripted streams and under real Ray Tune."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from ray.tune.schedulers import TrialScheduler

from regene_search.search.epsnet_asha import EpsNetParetoASHA, epsilon_net_positions
from regene_search.search.pareto_asha import ParetoASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
# Mutually non-dominated (accuracy, decoder_mae, latent_sparsity). A, B, C each hold one extreme;
# KNEE holds none (finite crowding, so ParetoASHA ranks it last) but is nearest the ideal point.
FRONT = {"A": (0.9, 0.5, 0.5), "B": (0.5, 0.1, 0.5), "C": (0.5, 0.5, 0.1), "KNEE": (0.8, 0.2, 0.2)}


def report(scheduler, trial_id, epoch, objectives):
    accuracy, mae, sparsity = objectives
    result = {"epoch": epoch, "accuracy": accuracy, "decoder_mae": mae, "latent_sparsity": sparsity}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)


def test_greedy_farthest_point_order_from_the_point_nearest_the_ideal():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [0.0, 1.0]])
    # origin first; [1, 0] and [0, 1] tie at distance 1 (lower index first); then [0, 1]; [0.1, 0] last
    assert list(epsilon_net_positions(points)) == [0, 1, 3, 2]
    assert list(epsilon_net_positions(points[[2, 1]])) == [0, 1]
    assert list(epsilon_net_positions(np.zeros((3, 3)))) == [0, 1, 2]  # identical points: arrival order


def test_the_knee_of_a_front_continues_where_crowding_stops_it():
    decisions = {}
    for scheduler in (ParetoASHA(max_t=8), EpsNetParetoASHA(max_t=8)):
        decisions[type(scheduler).__name__] = [report(scheduler, name, 1, point) for name, point in FRONT.items()]
    # n = 4 at rung 1, top 2 continue
    assert decisions["ParetoASHA"][-1] == STOP
    assert decisions["EpsNetParetoASHA"][-1] == CONTINUE


def test_rank_still_comes_first_and_reasons_name_the_variant():
    s = EpsNetParetoASHA(max_t=8)
    assert report(s, "good", 1, (0.9, 0.1, 0.1)) == CONTINUE
    assert report(s, "dominated", 1, (0.85, 0.15, 0.15)) == STOP  # dominated: rank 1, whatever its distance to the ideal
    assert s.stop_reasons["dominated"].startswith("pareto-asha-epsnet: stopped at rung epoch 1: position 2 of 2")


def test_with_ray_tune(ray_instance, tmp_path):
    from ray import tune

    def _scripted(config):  # shipped by value: workers cannot import tests
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "accuracy": config["point"][0], "decoder_mae": config["point"][1],
                         "latent_sparsity": config["point"][2]})

    scheduler = EpsNetParetoASHA(max_t=4, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        tune.with_resources(_scripted, {"cpu": 1}),
        param_space={"name": tune.grid_search(list(FRONT))} | {"point": tune.sample_from(lambda spec: FRONT[spec.config.name])},
        # one trial at a time: A, B, C, KNEE arrive at every rung in that order
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="epsnet", verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    epochs = {r.config["name"]: r.metrics["epoch"] for r in grid}
    # rung 1: B loses to A (tie, earlier arrival), C is third of 3 (top 2); KNEE is first of 4.
    # rung 2: KNEE is nearer the ideal than A among the two, and A was let through alone earlier.
    assert epochs == {"A": 4, "B": 1, "C": 1, "KNEE": 4}
    ids = {r.config["name"]: r.metrics["trial_id"] for r in grid}
    assert set(scheduler.stop_reasons) == {ids["B"], ids["C"]}


def test_an_order_stopped_at_a_point_agrees_with_the_whole_order_up_to_it():
    points = np.random.default_rng(0).random((40, 3))
    whole = epsilon_net_positions(points)
    for until in (0, 7, 39):
        stopped = epsilon_net_positions(points, until=until)
        placed = np.isfinite(stopped)
        assert stopped[until] == whole[until] and placed.sum() == whole[until] + 1
        assert np.array_equal(stopped[placed], whole[placed])
