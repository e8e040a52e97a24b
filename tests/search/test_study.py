"""The run's Optuna study in RUN/optuna.journal: the searcher records into it, a restored searcher
continues it, and `load_study` / `trial_numbers` read it back."""

from __future__ import annotations

import gc
import json
import math
import pickle
import shutil
import subprocess
import time
import weakref
from types import SimpleNamespace

import optuna
import pytest

from regene_search.errors import RunDirError
from regene_search.results import RunPaths, write_json
from regene_search.search import study as study_module
from regene_search.search.pareto import OBJECTIVES
from regene_search.search.space import default_space_path, load_space
from regene_search.search.study import (
    STUDY_FILE, DriverJournal, DriverStorage, SearchStudy, TrialNumbers, check_same_folder, flush_journals, load_study, storage, study_name, sync,
    trial_numbers,
)
from regene_search.search.tuner import DIVERGED_METRICS, SearchSettings, make_searcher

from ..conftest import CLI, new_run_folder


def run_folder(root, name: str):
    paths = new_run_folder(root, "mnist", name)
    write_json({"spec": {}}, paths.run_json)  # what makes it a run folder for load_study
    return paths


def searcher_for(paths, writer: bool = True):
    searcher = make_searcher(SearchSettings(trials=8, sampler="random", max_concurrent=4, seed=1), (study_name(paths), storage(paths, writer=writer)))
    searcher.set_search_properties(None, None, load_space(default_space_path("mnist")).to_tune())
    return searcher


def scores(accuracy: float, mae: float, sparsity: float) -> dict[str, float]:
    return dict(zip(OBJECTIVES, (accuracy, mae, sparsity))) | {"epoch": 2}


def test_the_study_is_kept_and_a_restored_searcher_continues_it(tmp_path):
    paths = run_folder(tmp_path, "study-run")
    first = searcher_for(paths)
    config = first.suggest("t_a")
    first.suggest("t_b")
    first.on_trial_complete("t_a", scores(0.91, 0.12, 0.3))
    first.on_trial_complete("t_b", {**DIVERGED_METRICS, "diverged": True})
    first.save(str(tmp_path / "searcher.pkl"))  # what Tune does at each experiment checkpoint

    restored = searcher_for(paths)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.suggest("t_c")
    restored.on_trial_complete("t_c", scores(0.95, 0.2, 0.1))

    assert (paths.dir / STUDY_FILE).exists()
    study = load_study(paths.dir)
    assert study.study_name == "study-run" and study.metric_names == list(OBJECTIVES)
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["t_a", "t_b", "t_c"]
    assert trial_numbers(paths) == {"t_a": 0, "t_b": 1, "t_c": 2}
    assert study.trials[0].values == [0.91, 0.12, 0.3] and study.trials[2].values == [0.95, 0.2, 0.1]
    assert study.trials[0].params == {k: v for k, v in config.items() if k in study.trials[0].params}
    assert study.trials[1].user_attrs.get("diverged") is True and "diverged" not in study.trials[0].user_attrs
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.number for t in study.best_trials} == {0, 2}


def _count_appends(monkeypatch) -> list[int]:
    from optuna.storages.journal import JournalFileBackend

    appends: list[int] = []
    original = JournalFileBackend.append_logs
    monkeypatch.setattr(JournalFileBackend, "append_logs", lambda self, logs: (appends.append(len(logs)), original(self, logs))[1])
    return appends


def _file_lines(paths) -> list[dict]:
    from optuna.storages.journal import JournalFileBackend

    return list(JournalFileBackend(str(paths.dir / STUDY_FILE)).read_logs(0))


def _searcher_calls(searcher) -> None:
    for k in range(3):
        searcher.suggest(f"t_{k}")
    searcher.on_trial_complete("t_0", scores(0.91, 0.12, 0.3))
    searcher.on_trial_complete("t_1", {**DIVERGED_METRICS, "diverged": True})
    searcher.on_trial_complete("t_2", error=True)


def test_the_drivers_journal_writes_each_searcher_call_once_and_the_same_study_as_optunas_own(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "FLUSH_SECONDS", 0.0)  # every call due at once
    appends = _count_appends(monkeypatch)
    studies = {}
    for writer in (False, True):
        paths = run_folder(tmp_path, f"writer-{writer}")
        searcher = searcher_for(paths, writer=writer)
        appends.clear()
        _searcher_calls(searcher)
        calls = list(appends)
        studies[writer] = load_study(paths.dir)  # a reader of the file, in another storage
        if writer:
            backend = searcher.searcher._storage._backend
            assert isinstance(backend, DriverJournal)
            assert backend._lines == _file_lines(paths)
    assert len(calls) == 6 and sum(calls) > 6  # one locked, fsynced write per call, where Optuna makes one per line
    plain, driver = (sorted(studies[w].trials, key=lambda t: t.number) for w in (False, True))
    assert [(t.params, t.values, t.state, t.user_attrs) for t in plain] == [(t.params, t.values, t.state, t.user_attrs) for t in driver]


def test_the_drivers_journal_keeps_each_line_as_the_file_gives_it_back_and_sends_only_lists_and_dicts_through_json(tmp_path, monkeypatch):
    round_trips: list = []
    counted = SimpleNamespace(dumps=lambda value: (round_trips.append(value), json.dumps(value))[1], loads=json.loads)
    monkeypatch.setattr(study_module, "json", counted)
    paths = run_folder(tmp_path, "read-back")
    searcher = searcher_for(paths)
    _searcher_calls(searcher)
    flush_journals()
    kept = searcher.searcher._storage._backend._lines

    def typed(lines):
        return [{key: (value, type(value)) for key, value in line.items()} for line in lines]

    assert typed(kept) == typed(_file_lines(paths))  # an IntEnum or a numpy float kept would differ in type
    assert len(kept) > 30
    assert len(round_trips) == sum(any(isinstance(v, (list, dict)) for v in line.values()) for line in kept)


def test_the_drivers_journal_holds_its_lines_until_due_a_reader_here_or_tunes_save(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "FLUSH_SECONDS", 3600.0)
    appends = _count_appends(monkeypatch)
    paths = run_folder(tmp_path, "held")
    searcher = searcher_for(paths)
    backend = searcher.searcher._storage._backend
    appends.clear()
    _searcher_calls(searcher)
    assert appends == [] and _file_lines(paths) == []  # six calls, nothing written yet
    assert trial_numbers(paths) == {"t_0": 0, "t_1": 1, "t_2": 2}  # the live tables read the driver's study in memory
    assert appends == [] and _file_lines(paths) == []
    assert len(load_study(paths.dir).trials) == 3  # a reader of the file in this process writes them first, in one append
    assert len(appends) == 1 and _file_lines(paths) == backend._lines
    searcher.suggest("t_3")
    assert len(_file_lines(paths)) < len(backend._lines)
    restored = pickle.loads(pickle.dumps(searcher))  # Tune saving its state, then a resume reading it
    assert len(appends) == 2 and _file_lines(paths) == backend._lines
    assert restored.searcher._storage._backend._lines == backend._lines
    monkeypatch.setattr(study_module, "FLUSH_SECONDS", 0.05)
    searcher.suggest("t_4")  # held: not yet due
    time.sleep(0.06)
    assert len(appends) == 2
    searcher.suggest("t_5")  # the first call after the wait writes both
    assert len(appends) == 3 and _file_lines(paths) == backend._lines


def test_the_drivers_storage_pops_waiting_trials_as_optunas_own_without_scanning_every_trial(tmp_path, monkeypatch):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    scans: list[int] = []
    original = JournalStorage.get_all_trials
    monkeypatch.setattr(JournalStorage, "get_all_trials", lambda self, study_id, deepcopy=True, states=None: (
        scans.append(1) if states == (optuna.trial.TrialState.WAITING,) else None, original(self, study_id, deepcopy, states))[1])
    asked = {}
    for kind in ("optuna", "driver"):
        path = str(tmp_path / f"{kind}.journal")
        store = DriverStorage(DriverJournal(path)) if kind == "driver" else JournalStorage(JournalFileBackend(path))
        study = optuna.create_study(study_name="s", storage=store, sampler=optuna.samplers.RandomSampler(seed=0))
        other = optuna.create_study(study_name="other", storage=store)
        other.enqueue_trial({"x": 9.0})  # another study's queue is not this one's
        for x in (0.25, 0.5):
            study.enqueue_trial({"x": x})
        params = []
        for k in range(6):
            if k == 3:  # Tune saving its state, and a resume
                study = optuna.load_study(study_name="s", storage=pickle.loads(pickle.dumps(store)), sampler=optuna.samplers.RandomSampler(seed=1))
                study.enqueue_trial({"x": 0.75})
            trial = study.ask()
            params.append(trial.suggest_float("x", 0, 10))
            study.tell(trial, 1.0)
        asked[kind] = (params, [t.state for t in other.trials])
        if kind == "optuna":
            optuna_scans, scans[:] = len(scans), []
    assert asked["driver"] == asked["optuna"] and asked["driver"][0][:2] == [0.25, 0.5] and asked["driver"][0][3] == 0.75
    assert optuna_scans == 6 and len(scans) == 2 * 2  # Optuna's scan of each study once per replay (the first, the resumed), not per ask


def test_the_searchers_study_tells_without_copying_and_as_optuna_does(tmp_path):
    from regene_search.search import study as module

    assert module._tell_with_warning is not None  # else this Optuna moved it and tell copies again (slower, still right)
    paths = run_folder(tmp_path, "told")
    searcher = searcher_for(paths)
    _searcher_calls(searcher)
    ot_study = searcher.searcher._ot_study
    assert type(ot_study) is SearchStudy
    told = ot_study.tell(ot_study.ask(), [0.5, 0.2, 0.1])
    assert told is ot_study._storage.get_trial(told._trial_id)  # the stored trial itself
    read = load_study(paths.dir).trials
    complete, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    assert [t.state for t in read] == [complete, complete, fail, complete] and read[3].values == [0.5, 0.2, 0.1] == told.values
    assert ot_study.tell(ot_study.ask(), [0.5, math.nan, 0.1]).state == fail  # Optuna's own rule for a NaN


def test_no_study_yet_means_no_numbers(tmp_path):
    paths = run_folder(tmp_path, "empty")
    assert trial_numbers(paths) == {}
    storage(paths)  # an empty journal file, no study in it
    assert trial_numbers(paths) == {}
    with pytest.raises(KeyError):
        load_study(paths.dir)


def test_the_live_reader_keeps_the_journal_open_and_reads_it_only_for_a_new_trial(tmp_path, monkeypatch):
    paths = run_folder(tmp_path, "live")
    live = TrialNumbers(paths)
    assert live(["t_a"]) == {}  # no journal yet
    searcher = searcher_for(paths)
    monkeypatch.setattr(study_module, "_DRIVERS", weakref.WeakValueDictionary())  # the driver is another process
    for k, trial_id in enumerate(["t_a", "t_b", "t_c"]):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, scores(0.9, 0.1, 0.2))
        assert live([f"t_{c}" for c in "abc"[: k + 1]]) == trial_numbers(paths)  # the same as reading it all afresh
    replayed = live._journal._replay_result.log_number_read
    searcher.suggest("t_d")  # new lines in the journal
    assert live(["t_a", "t_c"]) == {"t_a": 0, "t_b": 1, "t_c": 2}
    assert live._journal._replay_result.log_number_read == replayed  # every id asked for is known: not read
    assert live(["t_d"])["t_d"] == 3 and live._journal._replay_result.log_number_read > replayed


def test_the_live_reader_in_the_drivers_process_reads_the_drivers_study_not_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "FLUSH_SECONDS", 3600.0)
    paths = run_folder(tmp_path, "live-driver")
    live = TrialNumbers(paths)
    searcher = searcher_for(paths)
    reads = []
    monkeypatch.setattr(study_module.ReaderJournal, "read_logs", lambda self, n: reads.append(n) or iter(()))
    for k, trial_id in enumerate(["t_a", "t_b", "t_c"]):
        searcher.suggest(trial_id)
        assert live([trial_id]) == {f"t_{c}": i for i, c in enumerate("abc"[: k + 1])}
    assert reads == [] and _file_lines(paths) == [] and live._journal is None  # all from memory, nothing written
    restored = pickle.loads(pickle.dumps(searcher))  # a resumed driver: its unpickled study is the one read
    del searcher
    gc.collect()
    restored.suggest("t_d")
    assert live(["t_d"])["t_d"] == 3 and reads == []


def test_a_study_on_an_object_store_is_uploaded_and_read_back_elsewhere(s3_root, tmp_path, monkeypatch):
    monkeypatch.setenv("REGENE_SEARCH_CACHE", str(tmp_path / "here"))
    paths = run_folder(s3_root, "study-s3")
    searcher = searcher_for(paths)
    searcher.suggest("t_a")
    searcher.on_trial_complete("t_a", scores(0.8, 0.1, math.nan))  # NaN: Optuna refuses the values, the trial stays running
    sync(paths)
    monkeypatch.setenv("REGENE_SEARCH_CACHE", str(tmp_path / "another-machine"))
    assert trial_numbers(paths) == {"t_a": 0}
    assert load_study(paths.dir).trials[0].state == optuna.trial.TrialState.RUNNING


def test_a_search_moved_to_another_folder_is_refused_before_it_writes_to_the_first(smoke_search_run, tmp_path):
    """Tune's saved searcher holds the study by the folder's first path and name: resuming a copy
    would write the new trials into the original's journal, so it is refused in one line."""
    source = smoke_search_run.run_dir
    copy = tmp_path / "copied"
    shutil.copytree(source, copy)
    stages = json.loads((copy / "stages.json").read_text())  # as if the search had been interrupted
    stages["search"] = {**stages["search"], "status": "interrupted"}
    (copy / "stages.json").write_text(json.dumps(stages))
    journal = (source / STUDY_FILE).read_bytes()

    proc = subprocess.run([*CLI, "run", "--resume", str(copy)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"began as {source}" in lines[0] and "move it back" in lines[0], proc.stderr
    assert (source / STUDY_FILE).read_bytes() == journal
    check_same_folder(RunPaths.existing(source))  # where it began, it resumes


def test_a_run_folder_from_before_the_first_folder_was_recorded_is_not_refused(tmp_path):
    paths = run_folder(tmp_path, "old")
    check_same_folder(paths)
    write_json({"spec": {}, "folder": str(tmp_path / "elsewhere")}, paths.run_json)
    with pytest.raises(RunDirError, match="began as"):
        check_same_folder(paths)
