"""Runs the stages of a run in order, records each in stages.json, and resumes interrupted runs."""

from __future__ import annotations

import dataclasses
import importlib
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from rich.console import Console

from . import __version__, cluster
from .config import STAGES, RunSpec
from .data import load_dataset
from .data.dataset import ImageData
from .errors import UserError
from .results import RunPaths, read_json, write_json
from .search.space import load_space
from .stages.context import StageContext

StageFn = Callable[[StageContext], dict[str, Any]]


_STAGE_FUNCTIONS = {
    "search": ("regene_search.stages.search", "run_search_stage"),
    "decoder": ("regene_search.stages.decoder", "decoder_stage"),
    "generate": ("regene_search.stages.generate", "generate_stage"),
    "evaluate": ("regene_search.stages.evaluate", "evaluate_stage"),
}


def stage_function(name: str) -> StageFn:
    """Imported on demand so `regene-search --help` and single stages start fast."""
    module, attr = _STAGE_FUNCTIONS[name]
    return getattr(importlib.import_module(module), attr)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(spec: RunSpec) -> dict[str, Any]:
    """The content of run.json: resolved config, search space, versions, seed, git commit."""
    return {
        "spec": spec.to_json(),
        "budget": dataclasses.asdict(spec.resolved_budget),
        "space": load_space(Path(spec.space_path)).to_json(),
        "seed": spec.seed,
        "versions": {
            "regene_search": __version__,
            "torch": torch.__version__,
            "ray": ray.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
        },
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_run_data(spec: RunSpec) -> ImageData:
    """The dataset once per run, cut to the budget's subset (the same seeded subset on resume)."""
    budget = spec.resolved_budget
    full = load_dataset(spec.dataset, Path(spec.data_dir) if spec.data_dir else None, seed=spec.seed, val_fraction=spec.val_fraction)
    return full.subset(train=budget.train_images, val=budget.val_images, seed=spec.seed)


def stage_status(paths: RunPaths) -> dict[str, Any]:
    return read_json(paths.stages_json) if paths.stages_json.exists() else {}


def _order(stages: tuple[str, ...]) -> list[str]:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]


def run_pipeline(
    spec: RunSpec,
    paths: RunPaths,
    *,
    address: str | None,
    dashboard_host: str,
    console: Console,
    ray_temp_dir: str | None = None,
) -> dict[str, Any]:
    """Run the requested stages that are not done yet; return stages.json's content.

    Data, cluster and resources are checked before the run folder is created, so bad input
    leaves nothing behind.
    """
    stages = _order(spec.stages)
    status = stage_status(paths) if paths.run_json.exists() else {}
    todo = [s for s in stages if status.get(s, {}).get("status") != "done"]
    for done in (s for s in stages if s not in todo):
        console.print(f"[dim]stage {done}: already done, skipped[/dim]")
    if not todo:
        return status

    data = load_run_data(spec)
    console.print(f"data: {spec.dataset}, {len(data.train_x)} train / {len(data.val_x)} val / {len(data.test_x)} test, {data.image_size}px x{data.channels}")
    info = cluster.connect(address, dashboard_host=dashboard_host, temp_dir=ray_temp_dir)
    try:
        console.print(f"ray: {info.nodes} node(s), {info.cpus:g} CPU, {info.gpus:g} GPU; auth {info.auth_mode}")
        if info.dashboard_url:
            console.print(f"dashboard: [bold]{info.dashboard_url}[/bold] (token auth: log in with the token in {cluster.token_file()})")
        cluster.check_resources(info, cpus_per_trial=spec.cpus_per_trial, gpus_per_trial=spec.gpus_per_trial)
        if not paths.run_json.exists():
            paths.make()
            write_json(run_record(spec), paths.run_json)
        ctx = StageContext(paths=paths, spec=spec, data=data, console=console, cluster=info)
        for stage in todo:
            started = time.time()
            status[stage] = {"status": "running", "started": started}
            write_json(status, paths.stages_json)
            console.rule(f"stage {stage}")
            summary = stage_function(stage)(ctx)
            status[stage] = {"status": "done", "started": started, "seconds": time.time() - started, "summary": summary}
            write_json(status, paths.stages_json)
            console.print(f"stage {stage} done in {time.time() - started:.1f} s")
    finally:
        cluster.disconnect()
    return status
