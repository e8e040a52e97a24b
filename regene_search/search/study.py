"""The run's Optuna study, kept in `RUN/optuna.journal`: the searcher that records into it, and reading it back.

Optuna's journal file is the storage Optuna recommends for shared (NFS) file systems, and what
`optuna-dashboard RUN/optuna.journal` and `optuna.load_study` open. A run on an object store
keeps the journal in a local cache and uploads it as the search's tables are written.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

try:  # what Study.tell runs before it deep-copies the told trial for its caller
    from optuna.study._tell import _tell_with_warning
except ImportError:  # a later Optuna moved it: SearchStudy.tell is Study.tell, copy and all
    _tell_with_warning = None

from ..errors import RunDirError
from ..results import RunPaths, read_run_record
from ..storage import Location
from .pareto import OBJECTIVES

STUDY_FILE = "optuna.journal"
TRIAL_ID_ATTR = "trial_id"  # the Tune trial id, which names the trial's rows in trials.parquet
FLUSH_SECONDS = 1.0  # the driver's journal writes its held lines at the first searcher call this long after them


def study_name(paths: RunPaths) -> str:
    """The study is named after the run (its folder's name)."""
    return paths.dir.name


def journal_path(paths: RunPaths, *, fresh: bool = False) -> Path:
    """Where the journal is written: in the run folder on local disk, else in a local cache,
    refreshed from the run folder's copy when `fresh` (a search starting or resuming, a reader)."""
    return (paths.dir / STUDY_FILE).local_copy("studies", fresh=fresh)


def check_same_folder(paths: RunPaths) -> None:
    """Refuse to continue a search in a run folder moved or copied from where it began: Tune's saved
    searcher holds the Optuna study by its first path and name, so it would go on writing there."""
    began = read_run_record(paths).get("folder")  # absent in runs from before it was recorded
    if began is not None and began != str(paths.dir):
        raise RunDirError(
            f"{paths.dir} began as {began}, and its unfinished search continues only there (Tune saved the Optuna study by that path): "
            "move it back to resume; its finished results can be read where it is"
        )


def storage(paths: RunPaths, *, fresh: bool = False, writer: bool = False) -> JournalStorage:
    """The journal for a reader (`ReaderJournal`), or with `writer` for the search's driver, its one
    writer (`DriverStorage` on a `DriverJournal`)."""
    path = journal_path(paths, fresh=fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    return DriverStorage(DriverJournal(str(path))) if writer else JournalStorage(ReaderJournal(str(path)))


class DriverStorage(JournalStorage):
    """Optuna's JournalStorage for the search's driver, which knows its WAITING trials without
    looking at every trial. `Study.ask` asks for them at every suggestion (trials queued with
    `enqueue_trial` go first); Optuna's answer scans the whole study, so a suggestion cost grew
    with the trials run. Here an index follows the writes, which all pass through this object."""

    _waiting: dict[int, int] | None = None  # WAITING trial id -> its study id; None: not built since the replay

    def __init__(self, backend: DriverJournal) -> None:
        super().__init__(backend)
        _DRIVERS[backend._file_path] = self

    def __setstate__(self, state: dict[Any, Any]) -> None:  # unpickled: the replay starts again
        super().__setstate__(state)
        self._waiting = None
        _DRIVERS[self._backend._file_path] = self

    def _waiting_index(self) -> dict[int, int]:
        if self._waiting is None:
            scan = super().get_all_trials  # Optuna's, over every trial: once
            self._waiting = {}
            for study_id in map(self.get_study_id_from_name, (s.study_name for s in self.get_all_studies())):
                for trial in scan(study_id, deepcopy=False, states=(TrialState.WAITING,)):
                    self._waiting[self.get_trial_id_from_study_id_trial_number(study_id, trial.number)] = study_id
        return self._waiting

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if self._waiting is not None and self.get_trial(trial_id).state == TrialState.WAITING:  # enqueue_trial, add_trial
            self._waiting[trial_id] = study_id
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            if self._waiting is not None:
                if self.get_trial(trial_id).state == TrialState.WAITING:
                    self._waiting = None  # back to WAITING (no Optuna code does this): look again
                else:
                    self._waiting.pop(trial_id, None)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if states != (TrialState.WAITING,):
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        self.get_study_name_from_id(study_id)  # KeyError for an unknown study, as Optuna's
        waiting = sorted((self.get_trial(t) for t, s in self._waiting_index().items() if s == study_id), key=lambda t: t.number)
        return copy.deepcopy(waiting) if deepcopy else waiting


class DriverJournal(JournalFileBackend):
    """The journal file as the search's driver, its one writer, uses it: every line is also kept in
    memory, so the study reads back its own writes without reading the file again, and lines reach
    the file in few locked, fsynced appends.

    Optuna writes a line per suggested parameter, each locked and fsynced: 13 a trial in the MNIST
    space, 9 ms a trial (benchmarks/scale.py). Here a searcher call's lines (`batch()`) are written
    together, at the end of the first call `FLUSH_SECONDS` after the oldest held line, so the file
    holds a trial's suggestion whole or not at all. They are also written before Tune saves its
    state (it pickles the searcher with the study: the file is never behind a state a resume would
    read), before any reader in this process reads the file (`ReaderJournal`), and when the search
    ends. Readers in other processes (optuna-dashboard) may see it that much behind. No other process
    may write to it during the search (its lines would be missing here, and the trial ids replayed
    from the file would differ).
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._load()

    def _load(self) -> None:
        """Every line of the file, read once: from here on the study reads them from memory."""
        self._log_number_offset = {0: 0}
        self._lines = list(super().read_logs(0))
        self._held: list[dict[str, Any]] = []  # written to memory, not yet to the file
        self._held_since = 0.0
        self._calls = 0  # searcher calls under way (`batch`)
        _WRITERS.add(self)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        return iter(self._lines[log_number_from:])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._lines.extend(map(_as_read_back, logs))
        if not self._held:
            self._held_since = time.monotonic()
        self._held.extend(logs)
        if not self._calls:
            self._flush_if_due()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One searcher call: its lines reach the file together."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if not self._calls:
                self._flush_if_due()

    def _flush_if_due(self) -> None:
        if self._held and time.monotonic() - self._held_since >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the held lines now, in one locked, fsynced append."""
        held, self._held = self._held, []
        if held:
            super().append_logs(held)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the searcher with its study when it saves its state
        self.flush()
        return {k: v for k, v in self.__dict__.items() if k not in ("_lines", "_held", "_held_since", "_calls")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()


_PLAIN = (str, int, float, bool, type(None))


def _as_read_back(log: dict[str, Any]) -> dict[str, Any]:
    """A line as the file gives it back. Every line's `op_code` is an IntEnum and a suggested
    parameter (most lines) may be a numpy float: those become the int or float JSON would make
    of them, without JSON; only a list or a dict (a study's directions, a trial's values) goes through it."""
    return {key: value if type(value) in _PLAIN else _json_value(value) for key, value in log.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, int):  # JournalOperation, TrialState, StudyDirection
        return int(value)
    if isinstance(value, float):  # numpy.float64: JSON writes its repr, which reads back as this float
        return float(value)
    return json.loads(json.dumps(value))


_WRITERS: weakref.WeakSet[DriverJournal] = weakref.WeakSet()
_DRIVERS: weakref.WeakValueDictionary[str, DriverStorage] = weakref.WeakValueDictionary()  # journal file -> the driver's storage in this process


def flush_journals() -> None:
    """Write what this process's driver journals hold: before reading or uploading the file, and at exit."""
    for journal in list(_WRITERS):
        journal.flush()


atexit.register(flush_journals)  # a driver that ends with lines still held (an error past Tune's last save)


class ReaderJournal(JournalFileBackend):
    """The journal file as a reader sees it: a driver in this process writes what it holds first,
    so every read here (live tables, `load_study`, `fail_orphans`) finds the whole study."""

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        flush_journals()
        return super().read_logs(log_number_from)


def sync(paths: RunPaths) -> None:
    """Upload the journal to a remote run folder (nothing to do on local disk)."""
    flush_journals()
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
    return TrialNumbers(paths).read()


class TrialNumbers:
    """Tune trial id -> Optuna trial number for a reader that asks again and again (the live tables).

    In the search's driver it reads the driver's own study, in memory and ahead of the file (a
    write of the live tables at 1,000 trials spent 0.1 s replaying the file's new lines). Elsewhere
    the journal stays open: Optuna's JournalStorage replays only the lines added since its last
    read, where `optuna.load_study` replays the whole file (0.35 s at 1,000 trials). A trial's
    number never changes, so the study is read only when a trial id is new."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.known: dict[str, int] = {}
        self._journal: JournalStorage | None = None

    def __call__(self, trial_ids: list[str]) -> dict[str, int]:
        """The numbers, read again only if one of `trial_ids` is not known yet."""
        return self.known if all(t in self.known for t in trial_ids) else self.read()

    def read(self) -> dict[str, int]:
        journal = self._study_storage()
        if journal is None:
            return self.known
        try:
            study_id = journal.get_study_id_from_name(study_name(self.paths))
        except KeyError:  # no trial suggested yet
            return self.known
        trials = journal.get_all_trials(study_id, deepcopy=False)
        self.known.update({t.user_attrs[TRIAL_ID_ATTR]: t.number for t in trials if TRIAL_ID_ATTR in t.user_attrs})
        return self.known

    def _study_storage(self) -> JournalStorage | None:
        """The driver's storage when the driver is this process, else the file's (None before it exists)."""
        path = journal_path(self.paths)
        driver = _DRIVERS.get(str(path))
        if driver is not None:
            return driver
        if self._journal is None and path.exists():
            self._journal = storage(self.paths)
        return self._journal


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


class SearchStudy(optuna.Study):
    """The searcher's study: `tell` returns the told trial as stored, not a deep copy. Tune's
    OptunaSearch drops what tell returns, and the copy (every distribution of the trial) was a
    fifth of the searcher's cost per trial (benchmarks/scale.py). Readers get a plain optuna.Study."""

    def tell(self, trial: Any, values: Any = None, state: TrialState | None = None, skip_if_finished: bool = False) -> FrozenTrial:
        if _tell_with_warning is None:
            return super().tell(trial, values, state=state, skip_if_finished=skip_if_finished)
        _tell_with_warning(study=self, trial=trial, value_or_values=values, state=state, skip_if_finished=skip_if_finished)
        number = trial if isinstance(trial, int) else trial.number
        return self._storage.get_trial(self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number))


class RecordedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch on the run's stored study, tagging each Optuna trial with its Tune trial id.

    A diverged trial is told the worst objectives (so the sampler avoids the region) and tagged
    `diverged`; trials.parquet leaves its objectives empty.
    """

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        self._ot_study.__class__ = SearchStudy  # Tune built it; only tell() differs
        with warnings.catch_warnings():  # experimental since Optuna 3.2; optuna-dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(list(OBJECTIVES))

    def suggest(self, trial_id: str) -> dict | None:
        with self._batch():
            config = super().suggest(trial_id)
            if trial_id in self._ot_trials:
                self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        with self._batch():
            if result and result.get("diverged") and trial_id in self._ot_trials and trial_id not in self._completed_trials:
                self._ot_trials[trial_id].set_user_attr("diverged", True)
            super().on_trial_complete(trial_id, result=result, error=error)

    def _batch(self) -> contextlib.AbstractContextManager:
        """A call's lines reach the journal file together, when the study is on a `DriverJournal`."""
        backend = getattr(self._storage, "_backend", None)  # None: a study in memory
        return backend.batch() if isinstance(backend, DriverJournal) else contextlib.nullcontext()
