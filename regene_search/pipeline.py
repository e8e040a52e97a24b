"""Runs the stages of a run in order, records each in stages.json, and resumes interrupted runs."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import ray
import torch
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from . import __version__, cluster, html_report, runlog, trackers
from .config import STAGES, RunSpec
from .data import load_dataset
from .data.dataset import ImageData
from .errors import DiskFull, Interrupted, UserError
from .results import RunPaths, read_stages, run_lock, write_json
from .runlog import open_run_log
from .search import study
from .search.space import load_space
from .search.tuner import verify_restorable
from .stages.context import StageContext

if TYPE_CHECKING:
    from .estimate import StageEstimate

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


def run_record(spec: RunSpec, paths: RunPaths) -> dict[str, Any]:
    """The content of run.json: resolved config, search space, versions, seed, git commit, and the
    folder the run began in."""
    return {
        "spec": spec.to_json(),
        "folder": str(paths.dir),
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
    """The dataset once per run, cut to the budget's subset, then labels kept on `spec.labelled_fraction`
    of the train split (the same seeded subset and labels on resume)."""
    budget = spec.resolved_budget
    full = load_dataset(spec.dataset, Path(spec.data_dir) if spec.data_dir else None, seed=spec.seed, val_fraction=spec.val_fraction)
    return full.subset(train=budget.train_images, val=budget.val_images, seed=spec.seed).with_labelled_fraction(spec.labelled_fraction, seed=spec.seed)


def describe_train_split(data: ImageData) -> str:
    """`5000 train`, or `500 labelled + 4500 unlabelled train` in a semi-supervised run."""
    if not len(data.unlabelled_x):
        return f"{len(data.train_x)} train"
    return f"{len(data.train_x)} labelled + {len(data.unlabelled_x)} unlabelled train"


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
    estimate: bool = True,
) -> dict[str, Any]:
    """Run the requested stages that are not done yet; return stages.json's content.

    With `estimate` and a local Ray, each stage's wall time is estimated first (estimate.py) and
    recorded as the stage's `estimated_seconds` in stages.json.

    Data, cluster and resources are checked before the run folder is created, so bad input
    leaves nothing behind.
    """
    stages = _order(spec.stages)
    new_run = not paths.run_json.exists()
    status = {} if new_run else read_stages(paths)
    todo = [s for s in stages if status.get(s, {}).get("status") != "done"]
    for done in (s for s in stages if s not in todo):
        console.print(f"[dim]stage {done}: already done, skipped[/dim]")
    if not todo:
        return status
    if "search" in todo and not new_run and verify_restorable(paths.tune_dir):  # refuse a tampered search before data, Ray or the lock
        study.check_same_folder(paths)

    data = load_run_data(spec)
    preamble = [f"data: {escape(str(spec.dataset))}, {describe_train_split(data)} / {len(data.val_x)} val / {len(data.test_x)} test, {data.image_size}px x{data.channels}"]
    console.print(preamble[-1])
    info = cluster.connect(address, dashboard_host=dashboard_host, temp_dir=ray_temp_dir)
    try:
        preamble.append(f"ray: {info.nodes} node(s), {info.cpus:g} CPU, {info.gpus:g} GPU; auth {info.auth_mode}")
        console.print(preamble[-1])
        if info.dashboard_url:
            preamble.append(f"dashboard: [bold]{info.dashboard_url}[/bold] (token auth: log in with the token in {escape(str(cluster.token_file()))})")
            console.print(preamble[-1])
        cluster.check_resources(info, cpus_per_trial=spec.cpus_per_trial, gpus_per_trial=spec.gpus_per_trial)
        resume_hint = f"continue with: regene-search run --resume {paths.dir}"
        paths.dir.check_free_space("run again" if new_run else resume_hint)
        preamble.append(f"run folder: {escape(str(paths.dir))}")  # only once the input checked out
        console.print(preamble[-1])
        if new_run:
            paths.make()
        with run_lock(paths), sigterm_as_ctrl_c() as signals, open_run_log(paths.dir, console) as console:
            log = runlog.current()
            log.line(f"regene-search {__version__} {'started' if new_run else 'resumed'}: {' '.join(sys.argv[1:]) or spec.dataset}")
            for line in preamble:
                log.write(Text.from_markup(line).plain + "\n")
            if new_run:
                if paths.run_json.exists():  # another run took this folder while ours was starting
                    raise UserError(f"run folder {paths.dir} already holds a run: pick another --name or continue it with --resume")
                write_json(run_record(spec, paths), paths.run_json)
            ctx = StageContext(paths=paths, spec=spec, data=data, console=console, cluster=info)
            estimate = estimate and address is None
            estimates = estimate_stages(ctx, todo) if estimate else {}
            at_start = dict(estimates)
            for stage in todo:
                paths.dir.check_free_space(resume_hint)
                started = time.time()
                status[stage] = {"status": "running", "started": started} | estimate_record(estimates.get(stage), at_start.get(stage))
                write_json(status, paths.stages_json)
                console.rule(f"stage {stage}")
                try:
                    summary = stage_function(stage)(ctx)
                except BaseException as exc:
                    # Never left "running": resume redoes the stage either way; show says what happened.
                    interrupted = isinstance(exc, KeyboardInterrupt)
                    signum = signals[-1] if signals else signal.SIGINT
                    disk_full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    reason = f"stopped by {signal.Signals(signum).name}" if interrupted else one_line(exc)
                    status[stage] |= {"status": "interrupted" if interrupted else "failed", "seconds": time.time() - started, "reason": reason}
                    log.line(f"stage {stage} {status[stage]['status']} after {status[stage]['seconds']:.1f} s: {reason}; {resume_hint}")
                    try:
                        write_json(status, paths.stages_json)
                    except OSError:  # the disk is full: stages.json keeps "running", which resume redoes too
                        pass
                    else:
                        write_report(paths, console)
                    if interrupted:
                        raise Interrupted(signum, stage, str(paths.dir)) from None
                    if disk_full:
                        raise DiskFull(f"{exc.filename or paths.dir}: no space left on the device; free some space, then {resume_hint}") from None
                    raise
                status[stage] |= {"status": "done", "seconds": time.time() - started, "summary": summary}
                write_json(status, paths.stages_json)
                trackers.log_stage(spec.mlflow, paths.dir.name, stage, summary, status[stage]["seconds"])
                console.print(f"stage {stage} done in {time.time() - started:.1f} s")
                write_report(paths, console)
                log.sync()
                later = todo[todo.index(stage) + 1 :]
                if stage == "search" and estimate and later:  # the promoted encoders are known now: time them
                    estimates |= estimate_stages(ctx, later, title="estimate for the promoted encoder(s)")
    finally:
        cluster.disconnect()
    return status


def estimate_stages(ctx: StageContext, stages: list[str], title: str = "estimate") -> dict[str, StageEstimate]:
    """Print each stage's estimated wall time on this machine; stage -> its estimate. An estimate
    that fails costs one line, never the run."""
    from .estimate import estimate_run, print_estimate
    from .stages.search import settings_for

    started = time.perf_counter()
    try:
        found = estimate_run(ctx, stages, slots=settings_for(ctx.spec, ctx.cluster.cpus if ctx.cluster else None).max_concurrent)
    except Exception as exc:  # noqa: BLE001 -- an estimate is advice; the run goes on without it
        ctx.console.print(f"[yellow]no estimate: {escape(one_line(exc))}[/yellow]")
        return {}
    print_estimate(found, ctx.console, budget=ctx.spec.budget, measured_in=time.perf_counter() - started, title=title)
    return {e.stage: e for e in found}


def estimate_record(latest: StageEstimate | None, at_start: StageEstimate | None) -> dict[str, Any]:
    """A stage's estimates in stages.json: the one it started with, and the run's first (with its
    low-high range by the encoder promoted) when that differs."""
    record = {"estimated_seconds": latest.seconds} if latest else {}
    if at_start and at_start is not latest:
        record["estimated_seconds_at_start"] = at_start.seconds
    if at_start and at_start.low is not None:
        record["estimated_range_at_start"] = [at_start.low, at_start.high]
    return record


def write_report(paths: RunPaths, console: Console) -> None:
    """report.html as the run stands; a page that cannot be drawn costs one line, never the run's results."""
    try:
        html_report.write_report(paths.dir)
    except Exception as exc:  # noqa: BLE001 -- the stage's results are already safe on disk
        console.print(f"[yellow]report.html not written: {escape(one_line(exc))}[/yellow]")


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """SIGTERM takes Ctrl-C's path (Tune's graceful stop, then `Interrupted`); yields the signals received.

    Replaces Ray's driver handler, which exits mid-call with its C++ stack and no word of ours.
    """
    received: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            raise KeyboardInterrupt  # a background job (`cmd &`, nohup) ignores SIGINT: raising it would do nothing
        signal.raise_signal(signal.SIGINT)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for stages.json and show."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
