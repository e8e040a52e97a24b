"""The neutral judge: its recipes and their cache key, the per-dataset cache, resuming a cut-short training, the weak flag."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from regene_search.config import BUDGETS, Budget, RunSpec
from regene_search.results import RunPaths
from regene_search.stages.context import StageContext
from regene_search.stages.neutral import (
    RECIPES, JudgeRecipe, NeutralConfig, cache_path, ensure_neutral, judge_data, judge_is_weak, judge_recipe, judge_target, load_judge_data,
    load_neutral, neutral_setup, train_neutral,
)

from ..conftest import SHARED_DATA, needs_mnist

pytestmark = needs_mnist
TINY = Budget(name="tiny", train_images=None, val_images=None, max_epochs=1, trials=1, neutral_epochs=1)


def context(root, data, **spec_fields) -> StageContext:
    fields = {"budget": "tiny", "name": "t", **spec_fields}
    spec = RunSpec(dataset="mnist", data_dir=str(SHARED_DATA), results_root=str(root), space_path="unused.toml", **fields)
    paths = RunPaths.plan(root, "mnist", fields["name"])
    return StageContext(paths=paths, spec=spec, data=data, console=Console(file=io.StringIO(), width=200))


@pytest.fixture
def tiny_budget(monkeypatch):
    monkeypatch.setitem(BUDGETS, "tiny", TINY)


def changed(value):
    """Another value of a recipe field's type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "-other"
    return 1000 if value is None else value * 2 + 1


def test_the_cache_key_changes_when_any_recipe_field_changes():
    recipe = RECIPES["cpu"]
    keys = {recipe.key("cifar10")}
    for field in dataclasses.fields(JudgeRecipe):
        keys.add(dataclasses.replace(recipe, **{field.name: changed(getattr(recipe, field.name))}).key("cifar10"))
    assert len(keys) == 1 + len(dataclasses.fields(JudgeRecipe))
    assert recipe.key("mnist") not in keys  # and per dataset


def test_the_budget_and_device_choose_the_recipe_and_a_whole_split_judge_serves_every_seed(tmp_path, mnist_2k, tiny_budget):
    spec = lambda **f: context(tmp_path, mnist_2k, **f).spec  # noqa: E731
    assert judge_recipe(spec(budget="default")) == RECIPES["cpu"] == judge_recipe(spec(budget="cpu-hour"))
    assert judge_recipe(spec(budget="paper", gpus_per_trial=1.0)) == RECIPES["gpu"]
    assert judge_recipe(spec(budget="default", neutral_depth=20)).depth == 20
    smoke = judge_recipe(spec(budget="smoke", seed=4))
    assert smoke.name == "quick" and not smoke.whole_split and (smoke.epochs, smoke.seed) == (BUDGETS["smoke"].neutral_epochs, 4)
    # A whole-split judge is the same whatever the run's seed; the quick judge trains on the run's seeded subset.
    default = [context(tmp_path, mnist_2k, budget="default", seed=s) for s in (0, 1)]
    assert cache_path(default[0], neutral_setup(default[0])[1]) == cache_path(default[1], neutral_setup(default[1])[1])
    quick = [context(tmp_path, mnist_2k, seed=s) for s in (0, 1)]
    assert cache_path(quick[0], neutral_setup(quick[0])[1]) != cache_path(quick[1], neutral_setup(quick[1])[1])


def test_the_whole_split_judge_trains_on_every_labelled_image_but_the_tests(tmp_path, mnist_2k):
    whole = judge_data(load_judge_data(context(tmp_path, mnist_2k, budget="default")))
    assert (len(whole.train_x), len(whole.train_y), len(whole.val_x), len(whole.test_x)) == (60_000, 60_000, 0, 10_000)
    import torchvision

    official = torchvision.datasets.MNIST(str(SHARED_DATA), train=True, download=False)
    assert torch.equal(torch.bincount(whole.train_y), torch.bincount(official.targets))
    assert torch.equal(whole.test_y, torchvision.datasets.MNIST(str(SHARED_DATA), train=False, download=False).targets)


def test_a_judge_is_trained_once_then_reused_by_another_run(tmp_path, mnist_2k, tiny_budget, cpu_threads):
    first = context(tmp_path, mnist_2k)
    state, path, cached = ensure_neutral(first)
    printed = first.console.file.getvalue()
    assert "neutral: training the quick judge (ResNet-8, width 16) for 1 epochs on 2500 images" in printed and "neutral: epoch 1/1  train loss" in printed
    assert not cached and Path(path).parent == tmp_path.resolve() / "mnist" / "_neutral" and Path(path).is_file()
    assert state["recipe"]["name"] == "quick" and state["train_images"] == 2500 and not list(Path(path).parent.glob("*.partial.pt"))
    assert 0.2 < state["test_accuracy"] < 1.0  # one epoch on 2500 digits: above chance (0.1), ...
    assert judge_is_weak("mnist", state["test_accuracy"])  # ... but below the target: a weak judge, flagged
    assert not judge_is_weak("mnist", judge_target("mnist")) and judge_is_weak("mnist", math.nan)

    second_run = context(tmp_path, mnist_2k, name="second")
    again, same_path, cached = ensure_neutral(second_run)
    assert cached and same_path == path and "training" not in second_run.console.file.getvalue()
    torch.testing.assert_close(again["model"], state["model"])
    assert load_neutral(again).config.depth == 8


def test_an_interrupted_training_resumes_after_its_last_epoch_and_ends_where_an_uninterrupted_one_does(tmp_path, mnist_2k, cpu_threads):
    data = judge_data(mnist_2k.subset(train=400, val=0, test=200, seed=0))
    config = NeutralConfig(image_size=28, channels=1, num_classes=10, depth=8, width=8)
    recipe = JudgeRecipe(name="test", depth=8, width=8, epochs=3, batch_size=100, lr=0.1)
    whole = train_neutral(data, config, recipe, device=torch.device("cpu"))

    class Stop(Exception):
        pass

    def stop_after_epoch_2(line: str) -> None:
        if line.startswith("neutral: epoch 2/3"):
            raise Stop

    from regene_search.storage import Location

    progress = Location.of(tmp_path / "judge.partial.pt")
    with pytest.raises(Stop):
        train_neutral(data, config, recipe, progress, device=torch.device("cpu"), report=stop_after_epoch_2)
    lines = []
    resumed = train_neutral(data, config, recipe, progress, device=torch.device("cpu"), report=lines.append)
    assert lines[0] == "neutral: resuming after epoch 2/3" and [line.split("  ")[0] for line in lines[1:]] == ["neutral: epoch 3/3"]
    torch.testing.assert_close(resumed["model"], whole["model"])
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_an_unreadable_cache_file_is_retrained_and_replaced(tmp_path, mnist_2k, tiny_budget, cpu_threads):
    ctx = context(tmp_path, mnist_2k.subset(train=300, val=100, seed=0))
    path = cache_path(ctx, neutral_setup(ctx)[1])
    Path(path).parent.mkdir(parents=True)
    Path(path).write_bytes(b"truncated")
    state, got_path, cached = ensure_neutral(ctx)
    assert got_path == path and not cached
    assert torch.load(path, weights_only=True)["format"] == state["format"]
