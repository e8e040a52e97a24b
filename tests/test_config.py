"""config.py: the expected epochs under a scheduler, and how many trials a budget runs."""

import pytest

from regene_search.config import BUDGETS, SEARCH_WINNER, RunSpec, scheduled_epochs


def _spec(budget: str, **kwargs) -> RunSpec:
    return RunSpec(dataset="mnist", data_dir=None, budget=budget, name="x", results_root="/tmp", space_path="x.toml", **kwargs)


def test_fifo_runs_every_epoch_and_asha_halves_at_each_rung():
    assert scheduled_epochs(8, "fifo", 1, 2) == 8
    # rungs at 1, 2, 4: all run epoch 1, half epoch 2, a quarter epochs 3-4, an eighth 5-8
    assert scheduled_epochs(8, "asha", 1, 2) == pytest.approx(1 + 0.5 + 0.25 * 2 + 0.125 * 4)
    assert scheduled_epochs(8, "pareto-asha", 2, 3) == pytest.approx(2 + 4 / 3 + 2 / 9)  # rungs at 2 and 6
    assert scheduled_epochs(1, "asha", 1, 2) == 1


def test_an_early_stopping_search_gets_the_trials_its_budget_would_spend_whole():
    assert _spec("default", scheduler="fifo").resolved_trials == 24
    # default: 8 epochs, rung at 2, 1 in 4 go on: 2 + 6/4 = 3.5 epochs a trial; 2 warm-up trials run all 8
    spec = _spec("default", scheduler="asha", grace_period=2, reduction_factor=4.0, warmup_trials=2)
    assert spec.resolved_trials == 2 + round(22 * 8 / 3.5)
    assert 2 * 8 + (spec.resolved_trials - 2) * 3.5 == pytest.approx(24 * 8, rel=0.02)  # the same trial-epochs
    assert _spec("default", scheduler="asha", trials=7).resolved_trials == 7  # --trials is taken as given


def test_the_default_and_paper_budgets_search_with_the_winner_and_smoke_keeps_fifo():
    for name in ("default", "paper"):
        budget = BUDGETS[name]
        assert {k: getattr(budget, k) for k in SEARCH_WINNER} == SEARCH_WINNER
        assert 1 < budget.grace_period < budget.max_epochs
    assert (BUDGETS["smoke"].sampler, BUDGETS["smoke"].scheduler) == ("tpe", "fifo")


@pytest.mark.parametrize("max_t, grace, rf", [(8, 2, 4.0), (8, 2, 10.0), (60, 10, 10.0), (60, 10, 4.0), (12, 1, 2.0), (12, 2, 3.0), (8, 8, 2.0)])
def test_asha_rungs_are_tunes_own_short_of_the_last_epoch(max_t, grace, rf):
    from ray.tune.schedulers import ASHAScheduler

    from regene_search.config import asha_rungs

    tune_rungs = sorted(m for m, _ in ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=max_t, grace_period=grace,
                                                    reduction_factor=rf)._brackets[0]._rungs)
    assert asha_rungs(max_t, grace, rf) == [m for m in tune_rungs if m < max_t]
