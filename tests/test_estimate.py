import pytest
import torch

from regene_search.config import BUDGETS, RunSpec, TrialConfig
from regene_search.estimate import measure_trial, placed_on_slots, suggested_configs
from regene_search.search.space import default_space_path, load_space


def _spec(dataset: str = "mnist", budget: str = "smoke", **kwargs) -> RunSpec:
    kwargs = {"results_root": "/tmp", "name": "x"} | kwargs
    return RunSpec(dataset=dataset, data_dir=None, budget=budget, space_path=str(default_space_path(dataset)), **kwargs)


def test_trials_fill_the_first_free_slot_in_order():
    assert placed_on_slots([3, 1, 1, 1], 2) == 3
    assert placed_on_slots([1, 1, 1, 3], 2) == 4  # a long last trial is a straggler
    assert placed_on_slots([2, 2], 1) == 4


def test_suggested_configs_come_from_the_runs_space_seed_and_budget():
    spec = _spec(trials=12)
    space = load_space(default_space_path("mnist"))
    configs = suggested_configs(spec, 12)
    assert len(configs) == 12 and configs == suggested_configs(spec, 12)  # seeded
    assert configs != suggested_configs(_spec(trials=12, seed=1), 12)
    assert all(c.epochs <= BUDGETS["smoke"].max_epochs for c in configs)
    for name, domain in space.params.items():
        values = {getattr(c, name) for c in configs}
        if domain.kind == "choice":
            assert values <= set(domain.values)
        else:
            assert min(values) >= domain.low and max(values) <= domain.high
    assert len({(c.blocks, c.base_width, c.latent_dim, c.batch_size) for c in configs}) > 1  # a spread, not one default
    assert all(getattr(c, name) == value for c in configs for name, value in space.fixed.items())  # as Tune adds them


def test_the_samplers_own_draws_are_timed_and_its_later_picks_get_the_median():
    from regene_search.estimate import TrialCost, search_estimate

    spec = _spec(trials=6)  # TPE with 2 start-up trials; 2 at once: the third is suggested while they run, so drawn too
    configs = suggested_configs(spec, 6)

    def estimate(seconds_per_batch: list[float]) -> float:
        costs = [TrialCost(c, train_batch=b, infer_image=1e-4, probe_step=0.01) for c, b in zip(configs, seconds_per_batch)]
        return search_estimate(spec, configs, costs, train_images=5000, val_images=1000, slots=2).seconds

    base = estimate([0.1, 0.2, 0.3, 0.4])
    assert estimate([0.1, 0.2, 0.3, 40.0]) == pytest.approx(estimate([0.1, 0.2, 0.3, 2.0]))  # the 4th is TPE's pick: it counts only through the median
    assert estimate([0.1, 0.2, 3.0, 0.4]) > 2 * base  # the 3rd is the run's own draw: its cost counts in full


def test_a_wider_model_measures_slower_per_batch():
    torch.set_num_threads(1)
    small = measure_trial(TrialConfig(blocks=2, base_width=8, latent_dim=32, batch_size=64), BUDGETS["smoke"], image_size=28, channels=1, num_classes=10, device=torch.device("cpu"))
    wide = measure_trial(TrialConfig(blocks=2, base_width=64, latent_dim=32, batch_size=64), BUDGETS["smoke"], image_size=28, channels=1, num_classes=10, device=torch.device("cpu"))
    assert 0 < small.train_batch < wide.train_batch
    assert small.infer_image > 0 and small.probe_step > 0
    epoch = small.epoch_seconds(BUDGETS["smoke"], 5000, 1000)
    assert epoch == pytest.approx(79 * small.train_batch + (1000 + 1024) * small.infer_image + 60 * small.probe_step)


@pytest.fixture
def smoke_context(mnist_small, tmp_path):
    from rich.console import Console

    from regene_search.results import RunPaths
    from regene_search.stages.context import StageContext

    spec = _spec(results_root=str(tmp_path), generators=("convex", "lsdm"))
    return StageContext(paths=RunPaths.plan(spec.results_root, spec.dataset, spec.name), spec=spec, data=mnist_small, console=Console(record=True))


def test_every_stage_is_estimated_and_a_cached_judge_costs_nothing(smoke_context):
    from regene_search.estimate import estimate_run, judge_cost
    from regene_search.runtime import save_checkpoint
    from regene_search.stages.neutral import cache_path, neutral_setup

    torch.set_num_threads(1)
    stages = ["search", "decoder", "generate", "evaluate"]
    fresh = {e.stage: e for e in estimate_run(smoke_context, stages, slots=2)}
    assert list(fresh) == stages and all(e.seconds > 0 for e in fresh.values())
    assert "the judge's one-time training first" in fresh["decoder"].detail  # no VGG16 here: the decoder stage trains the judge
    assert "LSDM" in fresh["generate"].detail and "2 strategies" in fresh["generate"].detail

    judge = judge_cost(smoke_context, torch.device("cpu"))
    assert judge.training > 0
    _, recipe = neutral_setup(smoke_context)
    save_checkpoint(judge.state, cache_path(smoke_context, recipe))
    cached = {e.stage: e for e in estimate_run(smoke_context, ["decoder"], slots=2)}
    assert judge_cost(smoke_context, torch.device("cpu")).training == 0
    assert "one-time" not in cached["decoder"].detail


def test_the_estimate_prints_a_line_per_stage_and_warns_past_an_hour_and_a_quarter_without_a_gpu():
    from rich.console import Console

    from regene_search.estimate import StageEstimate, print_estimate

    console = Console(record=True, width=200)
    print_estimate([StageEstimate("search", 4200, "24 trials"), StageEstimate("decoder", 1200, "1 decoder(s)")], console, budget="default", measured_in=9)
    text = console.export_text()
    assert "estimate: about 1.5 h" in text and "search     70 min  24 trials" in text and "decoder    20 min" in text
    assert ("No GPU found" in text) == (not torch.cuda.is_available())
    spread = Console(record=True, width=200)
    narrow, wide = StageEstimate("generate", 300, "4 strategies", 280, 320), StageEstimate("evaluate", 300, "judge", 120, 600)
    print_estimate([narrow, wide], spread, budget="cpu-hour", measured_in=9)
    lines = spread.export_text().splitlines()
    assert lines[1].endswith("4 strategies") and lines[2].endswith("judge (2 min to 10 min by the encoder promoted)"), lines
    quiet = Console(record=True, width=200)
    print_estimate([StageEstimate("search", 600, "4 trials")], quiet, budget="smoke", measured_in=5)
    print_estimate([StageEstimate("search", 2000, "6 trials"), StageEstimate("decoder", 1700, "2 decoder(s)")], quiet, budget="cpu-hour", measured_in=60)
    assert "No GPU found" not in quiet.export_text()


def _promote(context, *configs: TrialConfig) -> None:
    """A finished search in real Parquet files: one trial per configuration, each promoted."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    context.paths.make()
    ids = [f"t{i}" for i in range(len(configs))]
    params = {f"param_{k}": [dataclasses.asdict(c)[k] for c in configs] for k in dataclasses.asdict(configs[0])}
    pq.write_table(pa.table({"trial_id": ids, "status": ["TERMINATED"] * len(ids), **params}), str(context.paths.trials))
    pq.write_table(pa.table({"trial_id": ids, "promoted": [True] * len(ids)}), str(context.paths.pareto))


def test_after_the_search_the_later_stages_are_timed_with_the_promoted_encoders(smoke_context):
    from regene_search.estimate import estimate_run, promoted_configs, promoted_count

    torch.set_num_threads(1)
    assert promoted_configs(smoke_context) == []  # before the search: the drawn configurations stand in
    later = ["decoder", "generate", "evaluate"]
    before = {e.stage: e for e in estimate_run(smoke_context, later, slots=2)}
    assert before["decoder"].detail.startswith(f"{promoted_count(smoke_context.spec)} decoder(s)")
    # The encoder is not chosen yet: each stage spans the cheapest to the dearest drawn configuration.
    assert all(e.low <= e.seconds <= e.high for e in before.values()), before
    assert before["generate"].low < before["generate"].high, before["generate"]
    small, large = TrialConfig(blocks=2, base_width=8, latent_dim=32), TrialConfig(blocks=3, base_width=64, latent_dim=1024)
    seconds = {}
    for name, config in {"small": small, "large": large}.items():
        _promote(smoke_context, config)
        assert promoted_configs(smoke_context) == [config]
        seconds[name] = {e.stage: e.seconds for e in estimate_run(smoke_context, later, slots=2)}
    # Generation decodes, encodes and trains LSDM at the encoder's latent size (measured 2.7x apart).
    # The decoder's own width is the run's, not the encoder's, so its time barely moves: count its decoders instead.
    assert seconds["small"]["generate"] < seconds["large"]["generate"], seconds
    _promote(smoke_context, small, large)
    both = {e.stage: e for e in estimate_run(smoke_context, later, slots=2)}
    assert both["decoder"].detail.startswith("2 decoder(s)")
    assert all(e.low is None for e in both.values())  # its own encoders: one figure
    # With the search still to run, the estimate times its drawn configurations, not an earlier run's front.
    assert "search" in {e.stage for e in estimate_run(smoke_context, ["search", "decoder"], slots=2)}
