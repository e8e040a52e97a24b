"""The replay simulator is faithful: a real Ray Tune search whose trainable reads the table makes
the same suggestions and the same stop/continue decisions as `benchmarks/replay.py`.

One concurrent trial (`max_concurrent=1`): with more, the order results reach the real driver
depends on wall-clock timing, and asynchronous schedulers then decide differently by design.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ray import tune

from regene_search.search.schedulers import build_scheduler
from regene_search.search.space import load_space
from regene_search.search.tuner import SearchSettings, make_searcher, quiet_tune_output

from .synthetic_table import write_table

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
sys.path.insert(0, BENCHMARKS)
import replay as rp  # noqa: E402

EPOCHS, TRIALS, SEED = 4, 10, 3
SPACE_TOML = """
[params]
latent_activation = { choice = ["relu", "leaky_relu", "gelu"] }
latent_dim = { choice = [64, 256, 1024] }
lr = { loguniform = [1e-4, 1e-2] }
dropout = { uniform = [0.0, 0.4] }
[fixed]
augment = false
"""


class ResultLog(tune.Callback):
    """(trial number in suggestion order, config, epoch) of every result the driver processes."""

    def __init__(self) -> None:
        self.results: list[tuple[int, dict, int | None]] = []
        self.numbers: dict[str, int] = {}  # trial_id -> number

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        number = int(trial.experiment_tag.split("_")[0]) - 1  # SearchGenerator tags trials 1, 2, ... in suggestion order
        self.results.append((number, dict(trial.config), result.get("epoch")))
        self.numbers[trial.trial_id] = number


def make_scheduler(kind: str):
    return build_scheduler(kind, EPOCHS)


@pytest.mark.slow  # 10 real Tune trials each: 2-4 min on the shared cores
@pytest.mark.parametrize(("sampler", "kind"), [("tpe", "pareto-asha"), ("random", "asha")])
def test_real_tune_makes_the_simulators_decisions(ray_instance, tmp_path, sampler, kind):
    quiet_tune_output()
    space_path = tmp_path / "space.toml"
    space_path.write_text(SPACE_TOML)
    space = rp.searched_space(load_space(space_path), EPOCHS)
    table_path = write_table(tmp_path / "faithful_curves.parquet", space, configs=24, epochs=EPOCHS, seed=1, diverged={5: 2})
    settings = SearchSettings(trials=TRIALS, sampler=sampler, max_concurrent=1, seed=SEED)

    simulated_scheduler = make_scheduler(kind)
    simulated = rp.replay(rp.Table.load(table_path), make_searcher(settings), simulated_scheduler, workers=1, space=space, max_trials=TRIALS)
    ends = [t.end for t in simulated.trials]
    assert "stopped" in ends and "finished" in ends  # both decisions occur, so the comparison means something

    def table_trainable(config, *, table_path, space_path, epochs):  # shipped by value: workers cannot import tests
        sys.path.insert(0, BENCHMARKS)
        import replay

        from regene_search.search.space import load_space

        table = replay.Table.load(table_path)
        for result in table.reports(table.nearest(config, replay.searched_space(load_space(space_path), epochs))):
            tune.report(result)

    real_scheduler = make_scheduler(kind)
    log = ResultLog()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(table_trainable, table_path=str(table_path), space_path=str(space_path), epochs=EPOCHS),
                            {"cpu": 1}),
        param_space=rp.param_space(space),
        # reuse_actors: one worker imports the table code once (no effect on decisions)
        tune_config=tune.TuneConfig(search_alg=make_searcher(settings), scheduler=real_scheduler, num_samples=TRIALS, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="faithful", callbacks=[log], verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors

    # The same configurations, suggested in the same order (so the searcher was told the same results) ...
    real_configs = {number: config for number, config, _ in log.results}
    assert len(real_configs) == TRIALS
    for trial in simulated.trials:
        assert real_configs[trial.index] == trial.config, trial.index
    # ... every result in the same order (serial, so the order is that of the trials) ...
    assert [(number, epoch) for number, _, epoch in log.results] == [(r["trial"], r["epoch"]) for r in simulated.reports]
    # ... and the schedulers' own records of their decisions agree.
    simulated_numbers = {t.trial_id: t.index for t in simulated.trials}
    if kind == "pareto-asha":
        def numbered(decisions, numbers):  # trial ids differ between the runs; NaN crowding (a failed trial) != NaN
            return [{**{k: None if v != v else v for k, v in d.items() if k != "trial_id"}, "trial": numbers[d["trial_id"]]}
                    for d in decisions]

        assert numbered(real_scheduler.decisions, log.numbers) == numbered(simulated_scheduler.decisions, simulated_numbers)
    else:
        assert {log.numbers[i]: reason for i, reason in real_scheduler.stop_reasons.items()} == \
               {simulated_numbers[i]: reason for i, reason in simulated_scheduler.stop_reasons.items()}  # fmt: skip
