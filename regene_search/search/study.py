"""The run's Optuna study, kept in `RUN/optuna.journal`: the searcher that records into it, and reading it back.

Optuna's journal file is the storage Optuna recommends for shared (NFS) file systems, and what
`optuna-dashboard RUN/optuna.journal` and `optuna.load_study` open. A run on an object store
keeps the journal in a local cache and uploads it as the search's tables are written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search.optuna import OptunaSearch

from ..results import RunPaths
from ..storage import Location
from .pareto import OBJECTIVES

STUDY_FILE = "optuna.journal"
TRIAL_ID_ATTR = "trial_id"  # the Tune trial id, which names the trial's rows in trials.parquet


def study_name(paths: RunPaths) -> str:
    """The study is named after the run (its folder's name)."""
    return paths.dir.name


def journal_path(paths: RunPaths, *, fresh: bool = False) -> Path:
    """Where the journal is written: in the run folder on local disk, else in a local cache,
    refreshed from the run folder's copy when `fresh` (a search starting or resuming, a reader)."""
    return (paths.dir / STUDY_FILE).local_copy("studies", fresh=fresh)


def storage(paths: RunPaths, *, fresh: bool = False) -> JournalStorage:
    path = journal_path(paths, fresh=fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def sync(paths: RunPaths) -> None:
    """Upload the journal to a remote run folder (nothing to do on local disk)."""
    target = paths.dir / STUDY_FILE
    local = journal_path(paths)
    if not target.is_local and local.exists():
        target.write_bytes(local.read_bytes())


def load_study(run_dir: Location | str | os.PathLike) -> optuna.Study:
    """The Optuna study of a run, for `optuna.visualization`, `optuna.importance` and friends."""
    paths = RunPaths.existing(run_dir)
    return optuna.load_study(study_name=study_name(paths), storage=storage(paths, fresh=True))


def trial_numbers(paths: RunPaths) -> dict[str, int]:
    """Tune trial id -> Optuna trial number; empty before the study exists."""
    if not journal_path(paths).exists():
        return {}
    try:
        study = optuna.load_study(study_name=study_name(paths), storage=storage(paths))
    except KeyError:  # no trial suggested yet
        return {}
    return {t.user_attrs[TRIAL_ID_ATTR]: t.number for t in study.get_trials(deepcopy=False) if TRIAL_ID_ATTR in t.user_attrs}


def fail_orphans(paths: RunPaths, trial_ids: set[str]) -> int:
    """Mark FAIL the study's trials still running that no Tune trial finished: suggested just
    before an interruption and never run after the resume. Returns how many."""
    if not journal_path(paths).exists():
        return 0
    study = optuna.load_study(study_name=study_name(paths), storage=storage(paths))
    orphans = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if t.user_attrs.get(TRIAL_ID_ATTR) not in trial_ids]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


class RecordedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch on the run's stored study, tagging each Optuna trial with its Tune trial id.

    A diverged trial is told the worst objectives (so the sampler avoids the region) and tagged
    `diverged`; trials.parquet leaves its objectives empty.
    """

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        with warnings.catch_warnings():  # experimental since Optuna 3.2; optuna-dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(list(OBJECTIVES))

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get("diverged") and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_trials[trial_id].set_user_attr("diverged", True)
        super().on_trial_complete(trial_id, result=result, error=error)
