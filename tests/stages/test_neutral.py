"""The neutral classifier's per-dataset cache under RESULTS_ROOT/<dataset>/_neutral/."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from regene_search.config import BUDGETS, Budget, RunSpec
from regene_search.data.dataset import ImageData
from regene_search.results import RunPaths
from regene_search.stages.context import StageContext
from regene_search.stages.neutral import cache_path, ensure_neutral, load_neutral, neutral_setup

TINY = Budget(name="tiny", train_images=None, val_images=None, max_epochs=1, trials=1, neutral_epochs=1)


def tiny_data() -> ImageData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.arange(48) % 3
    return ImageData("tiny", ("a", "b", "c"), x[:32], y[:32], x[32:40], y[32:40], x[40:], y[40:])


def context(root, **spec_fields) -> StageContext:
    spec = RunSpec(dataset="mnist", data_dir=None, budget="tiny", name="t", results_root=str(root), space_path="unused.toml", **spec_fields)
    paths = RunPaths.plan(root, "mnist", "t")
    return StageContext(paths=paths, spec=spec, data=tiny_data(), console=Console(file=io.StringIO(), width=200))


def test_neutral_is_trained_once_then_reused_and_keyed_by_what_shapes_it(tmp_path, monkeypatch):
    monkeypatch.setitem(BUDGETS, "tiny", TINY)
    ctx = context(tmp_path)
    state, path, cached = ensure_neutral(ctx)
    printed = ctx.console.file.getvalue()
    assert [line.split("  ")[0] for line in printed.splitlines() if line.startswith("neutral: epoch")] == [f"neutral: epoch {e}/{TINY.neutral_epochs}" for e in range(1, TINY.neutral_epochs + 1)]
    assert not cached and Path(path).parent == tmp_path.resolve() / "mnist" / "_neutral" and path.is_file()
    assert load_neutral(torch.load(path, weights_only=True)).config.depth == 20  # unknown budget: ResNet-20
    again, same_path, cached = ensure_neutral(ctx)
    assert cached and same_path == path
    torch.testing.assert_close(again["model"], state["model"])

    other_seed = context(tmp_path, seed=1)
    assert cache_path(other_seed, *neutral_setup(other_seed)) != path
    monkeypatch.setitem(BUDGETS, "tiny", replace(TINY, neutral_epochs=2))
    assert cache_path(ctx, *neutral_setup(ctx)) != path


def test_an_unreadable_cache_file_is_retrained_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setitem(BUDGETS, "tiny", TINY)
    ctx = context(tmp_path)
    path = cache_path(ctx, *neutral_setup(ctx))
    Path(path).parent.mkdir(parents=True)
    Path(path).write_bytes(b"truncated")
    state, got_path, cached = ensure_neutral(ctx)
    assert got_path == path and not cached
    assert torch.load(path, weights_only=True)["format"] == state["format"]
