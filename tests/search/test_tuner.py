"""The searcher's pieces that `search/tuner.py` builds."""

from __future__ import annotations

import copy
import pickle

import optuna
from ray.tune.search.optuna import OptunaSearch

from regene_search.search.space import default_space_path, load_space
from regene_search.search.tuner import RandomSampler


def test_the_random_sampler_draws_what_optunas_draws_from_the_same_seed_through_a_save_and_a_changed_space():
    space = OptunaSearch.convert_search_space(load_space(default_space_path("mnist")).to_tune())
    changed = {**space, "lr": optuna.distributions.FloatDistribution(0.5, 1.0, log=True)}
    spaces = [space] * 10 + [copy.deepcopy(space)] * 5 + [changed] * 5 + [space] * 5
    optunas, ours = (optuna.create_study(sampler=cls(seed=3), directions=["maximize"]) for cls in (optuna.samplers.RandomSampler, RandomSampler))
    drawn = {id(optunas): [], id(ours): []}
    for k, distributions in enumerate(spaces):
        if k == 12:  # Tune saves the searcher, sampler included, and a resumed search goes on from there
            ours.sampler = pickle.loads(pickle.dumps(ours.sampler))
            optunas.sampler = pickle.loads(pickle.dumps(optunas.sampler))
        for study in (optunas, ours):
            trial = study.ask(fixed_distributions=distributions)
            drawn[id(study)].append(trial.params)
            study.tell(trial, 0.5)
    assert drawn[id(ours)] == drawn[id(optunas)]
    assert len({p["lr"] for p in drawn[id(ours)]}) == len(spaces)  # values were drawn, not repeated
    assert all(p["lr"] >= 0.5 for p in drawn[id(ours)][15:20])  # the changed range was used, not a kept transform
    assert max(p["lr"] for p in drawn[id(ours)][:15]) <= space["lr"].high
