"""ParetoASHA on scripted metric streams, plus one short run under a real Ray Tune controller."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.schedulers import TrialScheduler

from regene_search.search.epsnet_asha import EpsNetParetoASHA, epsilon_net_positions
from regene_search.search.pareto import crowding_distance, non_dominated_ranks, to_minimisation
from regene_search.search.pareto_asha import ParetoASHA, rung_milestones

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trial(trial_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id)


def result(epoch, accuracy, decoder_mae, latent_sparsity, **extra) -> dict:
    return {"epoch": epoch, "accuracy": accuracy, "decoder_mae": decoder_mae, "latent_sparsity": latent_sparsity, **extra}


def report(scheduler: ParetoASHA, trial_id: str, epoch, objectives, **extra) -> str:
    return scheduler.on_trial_result(None, trial(trial_id), result(epoch, *objectives, **extra))


def last_decision(scheduler: ParetoASHA, trial_id: str) -> dict:
    return [d for d in scheduler.decisions if d["trial_id"] == trial_id][-1]


GOOD = (0.9, 0.1, 0.1)
MID = (0.7, 0.3, 0.3)
BAD = (0.5, 0.5, 0.5)
WORSE = (0.4, 0.6, 0.6)
WORST = (0.3, 0.7, 0.7)
BEST = (0.95, 0.05, 0.05)


# --- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_t": 0, "grace_period": 1},
        {"max_t": 4, "grace_period": 0},
        {"max_t": 2, "grace_period": 3},
        {"max_t": 8, "reduction_factor": 1},
        {"max_t": 8, "modes": ("max", "min")},
        {"max_t": 8, "modes": ("max", "min", "up")},
        {"max_t": 8, "objectives": ("a", "a"), "modes": ("min", "min")},
    ],
)
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ParetoASHA(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        ParetoASHA("epoch", 8)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("grace", "max_t", "rf", "expected"),
    [(1, 8, 2, [1, 2, 4]), (1, 9, 2, [1, 2, 4, 8]), (1, 10, 3, [1, 3, 9]), (2, 2, 2, []), (1, 1, 2, [])],
)
def test_rungs_lie_below_max_t(grace, max_t, rf, expected):
    assert rung_milestones(grace, max_t, rf) == expected
    assert ParetoASHA(max_t=max_t, grace_period=grace, reduction_factor=rf).milestones == expected


# --- promotion ----------------------------------------------------------------------------------


def test_dominated_trial_stops_and_front_trial_continues():
    s = ParetoASHA(max_t=8)
    assert report(s, "front", 1, GOOD) == CONTINUE
    assert report(s, "dominated", 1, BAD) == STOP
    assert "front" not in s.stop_reasons
    reason = s.stop_reasons["dominated"]
    assert reason.startswith("pareto-asha: stopped at rung epoch 1:")
    assert "position 2 of 2 trials" in reason and "non-dominated rank 1" in reason and "top 1 continue" in reason
    assert s.decisions == [
        {"trial_id": "front", "rung": 1, "rank": 0, "crowding": math.inf, "position": 1, "n_at_rung": 1,
         "n_continue": 1, "continued": True, "failure": None, "time": 1},
        {"trial_id": "dominated", "rung": 1, "rank": 1, "crowding": math.inf, "position": 2, "n_at_rung": 2,
         "n_continue": 1, "continued": False, "failure": None, "time": 1},
    ]  # fmt: skip


def test_stopped_trial_stays_stopped():
    s = ParetoASHA(max_t=8)
    report(s, "a", 1, GOOD)
    assert report(s, "b", 1, BAD) == STOP
    assert report(s, "b", 2, BEST) == STOP  # e.g. a buffered later result
    assert len(s.decisions) == 2


def test_maximised_accuracy_and_minimised_losses_are_respected():
    s = ParetoASHA(max_t=8)
    report(s, "a", 1, (0.6, 0.2, 0.2))
    # Higher accuracy and lower losses dominate; the flipped direction would keep "b" instead.
    assert report(s, "b", 1, (0.8, 0.1, 0.1)) == CONTINUE
    assert report(s, "c", 1, (0.4, 0.3, 0.3)) == STOP  # rank 2 of 3; top 2 continue


def test_asynchronous_arrival_at_a_rung():
    """rf=3: the first two arrivals continue whatever they are; later ones are ranked."""
    s = ParetoASHA(max_t=27, reduction_factor=3)
    assert report(s, "bad", 1, BAD) == CONTINUE  # n=1 < 3
    assert report(s, "worse", 1, WORSE) == CONTINUE  # n=2 < 3, though dominated by "bad"
    assert report(s, "worst", 1, WORST) == STOP  # n=3: top 1 continues; it is dominated by both
    assert report(s, "best", 1, BEST) == CONTINUE  # n=4: top 2; a later front arrival continues
    assert report(s, "mid", 1, MID) == CONTINUE  # n=5: top 2; rank 1 behind "best" only
    assert report(s, "late_bad", 1, (0.45, 0.55, 0.55)) == STOP  # n=6: top 2; rank 3
    assert [d["n_at_rung"] for d in s.decisions] == [1, 2, 3, 4, 5, 6]
    assert set(s.stop_reasons) == {"worst", "late_bad"}
    assert "top 1 continue" in s.stop_reasons["worst"]


def test_arrival_order_matters_only_through_the_grace_and_irreversibility():
    """The vectors of the test above, worst first: "worst" is let through by the grace, and is not
    stopped later when better trials arrive (decisions are never revised); each arrival then
    dominates all before it, so it is alone at rank 0 and continues too."""
    s = ParetoASHA(max_t=27, reduction_factor=3)
    arrivals = [("worst", WORST), ("worse", WORSE), ("bad", BAD), ("best", BEST)]
    assert [report(s, t, 1, v) for t, v in arrivals] == [CONTINUE] * 4
    assert s.stop_reasons == {}
    assert [(d["rank"], d["position"]) for d in s.decisions] == [(0, 1)] * 4  # ranks at arrival time


def test_ties_in_rank_and_crowding_go_to_the_earlier_arrival():
    s = ParetoASHA(max_t=8)
    assert report(s, "first", 1, MID) == CONTINUE
    assert report(s, "twin", 1, MID) == STOP  # duplicates: same rank, both boundary (inf)
    assert last_decision(s, "twin")["rank"] == 0


def test_crowding_breaks_ties_within_a_rank_and_keeps_boundary_points():
    """A front of accuracy/MAE trade-offs (same sparsity): interior points lose to boundary points."""
    s = ParetoASHA(max_t=8)
    low_acc_low_mae = (0.6, 0.1, 0.2)
    high_acc_high_mae = (0.9, 0.4, 0.2)
    interior = (0.75, 0.25, 0.2)
    assert report(s, "A", 1, low_acc_low_mae) == CONTINUE
    assert report(s, "X", 1, (0.5, 0.5, 0.2)) == STOP  # dominated by A
    assert report(s, "B", 1, high_acc_high_mae) == CONTINUE  # n=3, top 2: A and B (rank 0, both boundary)
    assert report(s, "C", 1, interior) == STOP  # n=4, top 2: rank 0 like A and B, but finite crowding
    decision = last_decision(s, "C")
    assert decision["rank"] == 0 and math.isfinite(decision["crowding"]) and decision["position"] == 3
    assert "non-dominated rank 0" in s.stop_reasons["C"]
    # A new extreme arriving later is a boundary point and beats the now-interior A for a place.
    assert report(s, "E", 1, (0.5, 0.05, 0.2)) == CONTINUE  # n=5, top 3
    assert last_decision(s, "E")["crowding"] == math.inf


def test_each_rung_is_judged_once_and_later_rungs_separately():
    s = ParetoASHA(max_t=8)
    assert report(s, "a", 1, MID) == CONTINUE
    assert report(s, "b", 1, GOOD) == CONTINUE
    assert report(s, "a", 1, MID) == CONTINUE  # a retried trial re-reporting epoch 1: already judged
    assert report(s, "a", 2, MID) == CONTINUE  # first at rung 2
    assert report(s, "a", 3, MID) == CONTINUE  # between rungs
    assert report(s, "b", 2, GOOD) == CONTINUE  # dominates "a" at rung 2
    assert [(d["trial_id"], d["rung"]) for d in s.decisions] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    s2 = ParetoASHA(max_t=8)
    report(s2, "b", 2, GOOD)
    assert report(s2, "a", 2, MID) == STOP  # at rung 2, "a" is dominated by "b"


def test_a_skipped_rung_is_judged_at_the_highest_rung_reached():
    s = ParetoASHA(max_t=16)
    report(s, "a", 3, MID)  # epochs 1, 2 never reported
    assert [d["rung"] for d in s.decisions] == [2]


def test_reaching_max_t_stops_without_a_reason():
    s = ParetoASHA(max_t=4)
    assert report(s, "a", 4, GOOD) == STOP
    assert s.stop_reasons == {} and s.decisions == []


def test_a_rung_stop_on_the_last_planned_epoch_gets_no_reason():
    s = ParetoASHA(max_t=8)
    report(s, "a", 1, GOOD)
    assert report(s, "short", 1, BAD, planned_epochs=1) == STOP  # it was ending anyway
    assert report(s, "long", 1, BAD, planned_epochs=8) == STOP
    assert set(s.stop_reasons) == {"long"}
    assert last_decision(s, "short")["continued"] is False


def test_results_without_epoch_or_objectives_are_ignored():
    s = ParetoASHA(max_t=8)
    assert s.on_trial_result(None, trial("a"), {"accuracy": 0.5}) == CONTINUE
    assert s.on_trial_result(None, trial("a"), {"epoch": 1, "accuracy": 0.5}) == CONTINUE
    assert s.decisions == []


# --- failures -----------------------------------------------------------------------------------


def test_diverged_trial_stops_with_reason_and_is_not_recorded():
    s = ParetoASHA(max_t=8)
    diverged = {"accuracy": 0.0, "decoder_mae": 1.0, "latent_sparsity": 1.0, "diverged": True, "diverged_reason": "loss is nan"}
    assert s.on_trial_result(None, trial("d"), diverged) == STOP  # no epoch in the report
    assert s.stop_reasons["d"] == "pareto-asha: stopped: diverged (loss is nan)"
    assert s.decisions[-1]["continued"] is False and s.decisions[-1]["rung"] is None
    assert report(s, "x", 1, BAD) == CONTINUE  # the first *recorded* arrival at rung 1
    assert last_decision(s, "x")["n_at_rung"] == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "oops"])
def test_non_finite_objective_stops(bad):
    s = ParetoASHA(max_t=8)
    assert report(s, "n", 2, (0.9, bad, 0.1)) == STOP
    assert s.stop_reasons["n"].startswith("pareto-asha: stopped at epoch 2: objective decoder_mae")
    assert all(not recorded for _, recorded in s._rungs)


def test_diverged_flag_false_is_not_a_failure():
    s = ParetoASHA(max_t=8)
    assert report(s, "a", 1, GOOD, diverged=False) == CONTINUE


# --- Tune interface and state -------------------------------------------------------------------


def test_completed_trial_is_recorded_for_later_arrivals():
    s = ParetoASHA(max_t=8)
    report(s, "a", 1, GOOD)
    s.on_trial_complete(None, trial("a"), result(2, *GOOD))  # last result at rung 2, never judged there
    assert report(s, "b", 2, BAD) == STOP
    assert last_decision(s, "b")["n_at_rung"] == 2
    s.on_trial_complete(None, trial("c"), result(2, float("nan"), 0.1, 0.1))  # failed: not recorded
    s.on_trial_complete(None, trial("e"), {})
    assert len(s._rungs[1][1]) == 2


def test_controller_hooks():
    s = ParetoASHA(max_t=8)
    assert s.set_search_properties(None, None) is True
    assert s.set_search_properties("accuracy", "max") is True
    assert s.metric is None  # so Tune does not demand a single scheduler metric in results
    s.on_trial_add(None, trial("a"))
    report(s, "a", 1, GOOD)
    s.on_trial_error(None, trial("a"))
    s.on_trial_remove(None, trial("a"))
    pending = SimpleNamespace(trial_id="p", status="PENDING")
    controller = SimpleNamespace(get_live_trials=lambda: [SimpleNamespace(trial_id="r", status="RUNNING"), pending])  # Tune gives a set
    assert s.choose_trial_to_run(controller) is pending
    text = s.debug_string()
    assert "ParetoASHA" in text and "epoch 1: 1 recorded" in text and "accuracy (max)" in text


def test_custom_objectives_and_time_attr():
    s = ParetoASHA(time_attr="training_iteration", max_t=10, objectives=("loss",), modes=("min",))
    trial_result = lambda it, loss: {"training_iteration": it, "loss": loss}  # noqa: E731
    assert s.on_trial_result(None, trial("a"), trial_result(1, 0.5)) == CONTINUE
    assert s.on_trial_result(None, trial("b"), trial_result(1, 0.9)) == STOP
    assert s.on_trial_result(None, trial("c"), trial_result(1, 0.1)) == CONTINUE
    assert "rung training_iteration 1" in s.stop_reasons["b"]


def test_pickle_round_trip_keeps_state_and_decides_alike(tmp_path):
    s = ParetoASHA(max_t=8)
    report(s, "a", 1, GOOD)
    report(s, "b", 1, BAD)
    copy = pickle.loads(pickle.dumps(s))
    assert copy.decisions == s.decisions and copy.stop_reasons == s.stop_reasons
    assert copy.milestones == s.milestones and copy.debug_string() == s.debug_string()
    for scheduler in (s, copy):
        assert report(scheduler, "c", 1, MID) == CONTINUE  # n=3: top 2
        assert report(scheduler, "d", 1, WORSE) == STOP
    assert copy.decisions == s.decisions

    path = tmp_path / "scheduler.pkl"
    s.save(str(path))
    restored = ParetoASHA(max_t=8)
    restored.restore(str(path))
    assert restored.decisions == s.decisions and restored.stop_reasons == s.stop_reasons
    assert report(restored, "a", 1, GOOD) == CONTINUE and len(restored.decisions) == len(s.decisions)


# --- properties on random streams ---------------------------------------------------------------

VALUE = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
STREAM = st.lists(st.tuples(st.integers(1, 7), st.tuples(VALUE, VALUE, VALUE)), min_size=1, max_size=25)


def _dominates(a, b) -> bool:
    a, b = (1 - a[0], a[1], a[2]), (1 - b[0], b[1], b[2])
    return all(x <= y for x, y in zip(a, b)) and a != b


@settings(max_examples=60, deadline=None)
@given(stream=STREAM, rf=st.sampled_from([2, 3]))
def test_decisions_follow_the_rule(stream, rf):
    s = ParetoASHA(max_t=8, reduction_factor=rf)
    for i, (epoch, objectives) in enumerate(stream):
        trial_id = f"t{i}"
        action = report(s, trial_id, epoch, objectives)
        decision = s.decisions[-1] if s.decisions and s.decisions[-1]["trial_id"] == trial_id else None
        if decision is None:
            assert action == CONTINUE
            continue
        n = decision["n_at_rung"]
        assert (action == CONTINUE) == decision["continued"]
        assert decision["continued"] == (n < rf or decision["position"] <= math.ceil(n / rf))
        recorded = dict(next(r for m, r in s._rungs if m == decision["rung"]))
        others = [v for t, v in recorded.items() if t != trial_id]
        dominated_by = sum(_dominates(v, objectives) for v in others)
        if n >= rf and dominated_by >= math.ceil(n / rf):
            assert action == STOP
        assert (decision["rank"] == 0) == (dominated_by == 0)
        if all(_dominates(objectives, v) for v in others):
            assert action == CONTINUE  # dominating everyone recorded: alone at rank 0, first
        assert (trial_id in s.stop_reasons) == (action == STOP)


def from_scratch_decision(scheduler: ParetoASHA, trial_id: str, recorded: dict) -> tuple[int, float, int]:
    """(rank, crowding, position) of `trial_id` by sorting the whole rung anew, as the module
    docstring states the rule (what ParetoASHA computed at every decision before it ranked incrementally)."""
    ids = list(recorded)
    F = to_minimisation(np.array([recorded[i] for i in ids], dtype=float))
    ranks = non_dominated_ranks(F)
    crowding = crowding_distance(F, ranks)
    if isinstance(scheduler, EpsNetParetoASHA):
        low, span = F.min(axis=0), np.ptp(F, axis=0)
        scaled = np.divide(F - low, span, out=np.zeros_like(F), where=span > 0)
        within = np.zeros(len(F))
        for rank in np.unique(ranks):
            members = np.flatnonzero(ranks == rank)
            within[members] = epsilon_net_positions(scaled[members])
    else:
        within = -crowding
    order = np.lexsort((np.arange(len(ids)), within, ranks))
    me = ids.index(trial_id)
    return int(ranks[me]), float(crowding[me]), int(np.flatnonzero(order == me)[0]) + 1


@pytest.mark.parametrize("kind", [ParetoASHA, EpsNetParetoASHA])
@pytest.mark.parametrize("seed", range(3))
def test_incremental_decisions_equal_sorting_the_whole_rung(kind, seed):
    rng = np.random.default_rng(seed)
    s = kind(max_t=8, reduction_factor=2)
    for i in range(400):
        objectives = rng.integers(0, 5, size=3) / 4 if rng.random() < 0.5 else rng.random(3)  # coarse: ties and duplicates
        epoch = int(rng.choice([1, 1, 2, 4, 5]))
        if rng.random() < 0.1:  # recorded without a decision, as a trial finishing between rungs is
            s.on_trial_complete(None, trial(f"t{i}"), result(epoch, *objectives))
            continue
        report(s, f"t{i}", epoch, objectives)
        decision = s.decisions[-1]
        if decision["trial_id"] != f"t{i}":
            continue
        recorded = next(r for m, r in s._rungs if m == decision["rung"])
        rank, crowding, position = from_scratch_decision(s, f"t{i}", recorded)
        assert (decision["rank"], decision["position"]) == (rank, position)
        assert decision["crowding"] == crowding or (math.isinf(crowding) and decision["crowding"] == crowding)
    assert len(s.decisions) > 250 and max(len(r) for _, r in s._rungs) > 150


# --- a real Ray Tune run ------------------------------------------------------------------------

QUALITIES = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]  # grid order: the best trials start first


def test_with_ray_tune(ray_instance, tmp_path):
    from ray import tune

    def _scripted(config):  # defined here so cloudpickle ships it by value (workers can't import tests)
        q = config["quality"]
        for epoch in range(1, 9):
            gain = 0.01 * epoch
            metrics = {"accuracy": 0.5 + 0.4 * q + gain, "decoder_mae": 0.5 - 0.4 * q - gain, "latent_sparsity": 0.5 - 0.3 * q}
            tune.report({"epoch": epoch, **metrics})

    scheduler = ParetoASHA(max_t=8, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        tune.with_resources(_scripted, {"cpu": 1}),
        param_space={"quality": tune.grid_search(QUALITIES)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="pareto_asha", verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    epochs = {r.config["quality"]: r.metrics["epoch"] for r in grid}
    ids = {r.config["quality"]: r.metrics["trial_id"] for r in grid}
    assert epochs[1.0] == 8  # dominates every trial at every rung
    # With two slots, the two worst start only after three/four better trials have passed rung 1.
    assert epochs[0.2] == 1 and epochs[0.0] == 1
    assert max(epochs[q] for q in (0.2, 0.0)) < epochs[1.0]
    for q in (0.2, 0.0):
        assert scheduler.stop_reasons[ids[q]].startswith("pareto-asha: stopped at rung epoch 1:")
    assert ids[1.0] not in scheduler.stop_reasons
    assert {d["trial_id"] for d in scheduler.decisions} == set(ids.values())
