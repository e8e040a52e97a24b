"""The live view's figures: best and hypervolume over every trial's latest report, progress lines, live tables."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from regene_search import runlog
from regene_search.search import progress
from regene_search.search.pareto import hypervolume, non_dominated_ranks, to_minimisation
from regene_search.storage import Location


def trial(trial_id: str, status: str = "RUNNING", **result):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result)


def report(watch, t, epoch: int, accuracy: float, mae: float, sparsity: float, **extra) -> None:
    result = {"epoch": epoch, "accuracy": accuracy, "decoder_mae": mae, "latent_sparsity": sparsity, **extra}
    t.last_result = result
    watch.on_trial_result(0, [], t, result)


def test_best_and_hypervolume_are_over_each_trials_latest_report(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(progress, "TABLE_SECONDS", 0.0)
    written = []
    watch = progress.LiveProgress(3, write_tables=lambda trials, history: written.append({k: dict(v) for k, v in history.items()}))
    watch.setup()  # pytest's captured stdout is no terminal: no live display
    a, b, c = trial("a"), trial("b"), trial("c")
    report(watch, a, 1, 0.50, 0.10, 0.30)
    report(watch, a, 2, 0.60, 0.20, 0.30)  # the latest report replaces the first: best MAE is 0.2 (b's), not 0.1
    report(watch, b, 1, 0.40, 0.20, 0.05)
    report(watch, c, 1, 0.99, 0.01, 0.01, diverged=True)  # never counts
    c.status = "TERMINATED"
    watch.on_trial_complete(0, [], c)
    with runlog.open_run_log(Location.of(tmp_path), Console(file=io.StringIO())):
        watch.on_step_end(0, [a, b, c])
        watch.on_experiment_end([a, b, c])
    latest = np.array([[0.60, 0.20, 0.30], [0.40, 0.20, 0.05]])
    F = to_minimisation(latest)
    expected_hv = hypervolume(F[non_dominated_ranks(F) == 0])
    lines = capsys.readouterr().out.splitlines()
    assert f"search 1/3 done, 2 running | best: accuracy 0.6000  decoder_mae 0.2000  latent_sparsity 0.0500 | HV {expected_hv:.4f} |" in lines[0]
    assert lines[-1].startswith("search 1/3 done, 0 running")
    logged = [line.split("  ", 1)[1] for line in (tmp_path / "run.log").read_text().splitlines()]
    assert logged == lines
    assert written and sorted(written[-1]) == ["a", "b"] and sorted(written[-1]["a"]) == [1, 2]
    assert written[-1]["a"][1]["decoder_mae"] == pytest.approx(0.10)


def test_lines_and_tables_keep_their_interval(monkeypatch, capsys):
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 3600.0)
    monkeypatch.setattr(progress, "TABLE_SECONDS", 3600.0)
    writes = []
    watch = progress.LiveProgress(2, write_tables=lambda trials, history: writes.append(1))
    watch.setup()
    a = trial("a")
    for epoch in range(1, 4):
        report(watch, a, epoch, 0.5, 0.1, 0.2)
        watch.on_step_end(0, [a])
    assert len(capsys.readouterr().out.splitlines()) == 1 and writes == [1]


def test_a_search_saved_by_an_older_version_restores_with_the_newer_fields():
    old = progress.LiveProgress(4)
    state = {k: v for k, v in old.__getstate__().items() if k in ("total", "started", "finished")}
    state["latest"] = {"a": np.array([0.9, 0.2, 0.5]), "b": np.array([0.8, 0.3, 0.6])}  # how older versions kept reports
    restored = progress.LiveProgress.__new__(progress.LiveProgress)
    restored.__setstate__(state)
    assert restored.total == 4 and restored.history == {} and restored.write_tables is None
    assert restored.front.front_keys == {"a"} and restored.front.hypervolume == pytest.approx(hypervolume(to_minimisation(state["latest"]["a"][None])))
    assert "latest" not in restored.__dict__
    # One saved before the ETA kept its finished times sorted: rebuilt from the trials' histories.
    state.update(history={"a": {2: {"time_total_s": 30.0}}, "b": {1: {"time_total_s": 10.0}}, "c": {1: {"time_total_s": 99.0}}}, finished={"a", "b"})
    restored.__setstate__(state)
    assert restored.finished_times == [10.0, 30.0]


@pytest.mark.parametrize("size", [1, 2, 7, 10, 101])
def test_sorted_median_is_numpys_median(size):
    values = sorted(np.random.default_rng(size).normal(size=size).tolist())
    assert progress.sorted_median(values) == pytest.approx(float(np.median(values)))


def test_the_eta_counts_each_running_trials_own_pace_and_the_trials_still_to_come():
    watch = progress.LiveProgress(5)
    watch.setup()
    a, b, c = trial("a"), trial("b"), trial("c")
    assert watch.eta() == float("inf")  # nothing reported yet
    for epoch, seconds in ((1, 10.0), (2, 20.0), (3, 30.0)):
        report(watch, a, epoch, 0.5, 0.1, 0.2, planned_epochs=3, time_total_s=seconds)
    watch.on_trial_complete(0, [], a)
    report(watch, b, 1, 0.5, 0.1, 0.2, planned_epochs=4, time_total_s=10.0)
    report(watch, b, 2, 0.5, 0.1, 0.2, planned_epochs=4, time_total_s=30.0)  # 20 s an epoch now: 2 to go, 40 s
    report(watch, c, 1, 0.5, 0.1, 0.2, planned_epochs=2, time_total_s=5.0)  # 1 to go, 5 s
    # two still to come at a's 30 s, over the 2 trials running: (40 + 5 + 60) / 2
    assert watch.eta() == pytest.approx(52.5)
    assert "ETA 00:52" in watch.line(2)
    watch.on_trial_complete(0, [], c)
    watch.total = 3  # nothing more to come: the straggler alone decides
    assert watch.eta() == pytest.approx(40.0)
    watch.on_trial_complete(0, [], b)
    assert watch.eta() == 0.0
