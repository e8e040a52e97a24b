"""Ray Tune orchestration: the trainable, the Optuna multi-objective searcher, resources, restore."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from optuna._transform import _SearchSpaceTransform  # what Optuna's RandomSampler draws through
from optuna.storages import BaseStorage

from ..config import SAMPLERS, Budget, TrialConfig
from ..data.dataset import ImageData
from ..data.shared import from_arrays, to_arrays
from ..runtime import load_checkpoint, save_checkpoint
from ..trial import TrialDiverged, TrialSetup, run_trial
from ..signing import SignTuneState, repair_from_signed_copies, sign_folder, verify_folder
from ..storage import Location
from .pareto import MODES, OBJECTIVES
from .study import RecordedOptunaSearch

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "classifier.pt"
# Every epoch's metrics so far, beside the classifier: Tune's own results can miss the last epochs
# reported before a driver was killed (they were not yet uploaded), the checkpoint never does.
HISTORY_FILE = "history.json"
EXPERIMENT_NAME = "search"
# What a diverged trial reports: the worst value of each objective, so the searcher learns the
# region is bad while the trial is excluded from the Pareto front by its `diverged` flag.
DIVERGED_METRICS = {"accuracy": 0.0, "decoder_mae": 1.0, "latent_sparsity": 1.0, "joint_score": float("-inf")}


@dataclass(frozen=True)
class SearchSettings:
    """How the search is run; resolved from the CLI and the budget."""

    trials: int
    sampler: str = "tpe"
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    seed: int = 0
    startup_trials: int | None = None  # TPE only; None: trials // 3 within 2..10


def _not_tuner_restore_advice(record: logging.LogRecord) -> bool:
    """Tune ends an interrupted run advising `Tuner.restore(...)`; our users continue with `run --resume` (we print that)."""
    return not record.getMessage().startswith("Experiment has been interrupted")


def quiet_tune_output() -> None:
    """Our live line replaces Tune's console reporter; silence Tune's and Optuna's chatter."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune_logger = logging.getLogger("ray.tune.tune")
    if _not_tuner_restore_advice not in tune_logger.filters:
        tune_logger.addFilter(_not_tuner_restore_advice)


def _trainable(config: dict[str, Any], *, data: dict[str, Any], setup: TrialSetup, budget: Budget) -> None:
    """One Tune trial on the dataset's `to_arrays` form (the node's object-store copy, mapped, not
    copied): resume from Tune's checkpoint if any, train, report every epoch."""
    for name in ("ray.tune", "ray.train"):  # per-epoch "checkpoint created" lines drown the live view
        logging.getLogger(name).setLevel(logging.WARNING)
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(round(resources.get("CPU", 1)))))
    trial_config = budget.clamp(TrialConfig.from_dict(config))
    resume, history = None, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(Path(folder) / CHECKPOINT_FILE, "Tune's trial checkpoint has no classifier")
            history = checkpoint_history(Location.of(folder))

    def report(metrics: dict[str, Any], make_checkpoint) -> None:
        history.append({**metrics, "timestamp": time.time()})
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(make_checkpoint(), Path(folder) / CHECKPOINT_FILE)
            (Path(folder) / HISTORY_FILE).write_text(json.dumps(history))
            tune.report({**metrics, "planned_epochs": trial_config.epochs, "diverged": False}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        run_trial(from_arrays(data), trial_config, setup, on_epoch=report, resume_from=resume)
    except TrialDiverged as exc:
        tune.report({**DIVERGED_METRICS, "planned_epochs": trial_config.epochs, "diverged": True, "diverged_reason": str(exc)})


def checkpoint_history(checkpoint: Location) -> list[dict[str, Any]]:
    """The per-epoch metrics stored in a trial checkpoint folder; none if it has no (readable) history."""
    try:
        history = json.loads((checkpoint / HISTORY_FILE).read_bytes())
    except (FileNotFoundError, ValueError):
        return []
    return [row for row in history if isinstance(row, dict) and isinstance(row.get("epoch"), int)] if isinstance(history, list) else []


def trial_dirname(trial) -> str:
    """Name each trial's folder by its id, so files and Parquet rows join on `trial_id`."""
    return trial.trial_id


def random_draws(name: str, *, trials: int, startup_trials: int | None = None) -> int:
    """How many trials the sampler draws at random from its seed before results steer it: TPE's
    start-up trials, NSGA-II's first generation, every trial of the random sampler."""
    if name == "tpe":
        return startup_trials if startup_trials is not None else max(2, min(10, trials // 3))
    if name == "nsga2":
        return max(4, min(50, trials // 3))
    if name == "random":
        return trials
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


class RandomSampler(optuna.samplers.RandomSampler):
    """Optuna's random sampler, drawing the same values from the same seed, that keeps each
    parameter's search-space transform instead of building it anew at every draw: a third of its
    cost per suggestion (benchmarks/scale.py). Tune's searcher passes the same distribution objects
    at every suggestion; a different one (a changed space) gets its own transform."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self._transforms: dict[str, tuple[Any, _SearchSpaceTransform]] = {}  # parameter -> (its distribution, transform)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        kept = self._transforms.get(param_name)
        if kept is None or kept[0] is not param_distribution:
            kept = self._transforms[param_name] = (param_distribution, _SearchSpaceTransform({param_name: param_distribution}))
        transform = kept[1]
        return transform.untransform(self._rng.rng.uniform(transform.bounds[:, 0], transform.bounds[:, 1]))[param_name]

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the searcher; the transforms are rebuilt
        return {k: v for k, v in self.__dict__.items() if k != "_transforms"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _transforms={})


def make_sampler(name: str, *, seed: int, trials: int, startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    draws = random_draws(name, trials=trials, startup_trials=startup_trials)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=draws)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=draws)
    return RandomSampler(seed=seed)


def make_searcher(settings: SearchSettings, study: tuple[str, BaseStorage] | None = None) -> ConcurrencyLimiter:
    """The Optuna searcher, on the run's stored study `(name, storage)` (else in memory), at most
    `max_concurrent` trials at once."""
    name, storage = study or (None, None)
    searcher = RecordedOptunaSearch(
        metric=list(OBJECTIVES),
        mode=list(MODES),
        sampler=make_sampler(settings.sampler, seed=settings.seed, trials=settings.trials, startup_trials=settings.startup_trials),
        study_name=name,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)


def make_trainable(data: ImageData, setup: TrialSetup, budget: Budget, settings: SearchSettings):
    """The trainable with its resources; `with_parameters` puts the dataset in the object store once,
    as numpy arrays, which every trial worker of a node maps instead of copying (`data/shared.py`)."""
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(_trainable, data=to_arrays(data), setup=setup, budget=budget), resources)


def run_config(storage: Location, settings: SearchSettings, callbacks: list[tune.Callback]) -> tune.RunConfig:
    storage_path, storage_filesystem = storage.tune_storage()
    return tune.RunConfig(
        name=EXPERIMENT_NAME,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        # Two, not one: Tune deletes the older checkpoint as soon as a newer one registers, but saves
        # its experiment state (which names the newer one) later; a driver killed in between left a
        # state naming a deleted checkpoint, and that trial failed on resume (seen on s3://).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
        verbose=0,
    )


def make_tuner(
    *,
    data: ImageData,
    setup: TrialSetup,
    budget: Budget,
    settings: SearchSettings,
    param_space: dict[str, Any],
    storage: Location | str | os.PathLike,
    scheduler: tune.schedulers.TrialScheduler | None = None,
    callbacks: list[tune.Callback] = (),
    study: tuple[str, BaseStorage] | None = None,
) -> tune.Tuner:
    """A new search in `storage`, or the interrupted one there continued: finished trials are kept,
    unfinished ones resume from their checkpoints (with the scheduler and callbacks Tune saved).
    Tune's state files are signed as they are saved and verified before a restore (`signing.py`)."""
    quiet_tune_output()
    storage = Location.of(storage)
    trainable = make_trainable(data, setup, budget, settings)
    experiment = experiment_path(storage)
    if verify_restorable(storage):
        path, filesystem = experiment.tune_storage()
        return tune.Tuner.restore(
            path, storage_filesystem=filesystem, trainable=trainable, param_space=param_space, resume_unfinished=True, resume_errored=True
        )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(settings, study),
            scheduler=scheduler,
            num_samples=settings.trials,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=run_config(storage, settings, [*callbacks, SignTuneState(experiment)]),
    )
    sign_folder(experiment)  # tuner.pkl, written by the constructor
    return tuner


def fit(tuner: tune.Tuner, planned_trials: int) -> tune.ResultGrid:
    """`tuner.fit()`, raising `KeyboardInterrupt` when a signal stopped it before every planned trial finished.

    On Ctrl-C Tune stops gracefully, saves its state and *returns*; a search cut short must not
    pass for a finished one. Tune leaves its own SIGINT/SIGUSR1 handlers installed after a run
    that was not interrupted, which would swallow a Ctrl-C in the later stages: they are reset.
    """
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        grid = tuner.fit()
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    if len(grid) < planned_trials or grid.num_terminated + grid.num_errors < len(grid):
        raise KeyboardInterrupt(f"the search stopped with {grid.num_terminated} of {planned_trials} trials finished")
    return grid


def experiment_path(storage: Location) -> Location:
    return storage / EXPERIMENT_NAME


def verify_restorable(storage: Location | str | os.PathLike) -> bool:
    """Whether `storage` holds a search to continue; raises RunDirError if its Tune state (which
    a restore unpickles) was not signed by this user's key. Cheap: no Ray, nothing unpickled."""
    storage = Location.of(storage)
    if not can_restore(storage):
        return False
    experiment = experiment_path(storage)
    for name in repair_from_signed_copies(experiment):
        log.warning("%s did not match what regene-search signed (cut short by an interruption?): its last signed version was put back", name)
    verify_folder(experiment)
    return True


def can_restore(storage: Location) -> bool:
    path, filesystem = experiment_path(storage).tune_storage()
    return tune.Tuner.can_restore(path, storage_filesystem=filesystem)
