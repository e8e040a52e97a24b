"""benchmarks/efficiency_bound.py: the oracle rules keep what they say and the script runs end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from regene_search.search.pareto import OBJECTIVES, to_minimisation
from regene_search.search.space import load_space
from regene_search.search.tuner import SearchSettings, make_searcher, quiet_tune_output

from .synthetic_table import write_table
from .test_replay import SPACE_TOML

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import efficiency_bound as eb  # noqa: E402
import replay as rp  # noqa: E402


def _table(tmp_path, configs=30, epochs=4, diverged=None):
    (tmp_path / "space.toml").write_text(SPACE_TOML)
    space = rp.searched_space(load_space(tmp_path / "space.toml"), epochs)
    return rp.Table.load(write_table(tmp_path / "s_curves.parquet", space, configs=configs, epochs=epochs, diverged=diverged)), space


def test_top_at_keeps_the_best_share_of_the_rungs_joint_score_and_skips_diverged(tmp_path):
    table, _ = _table(tmp_path, diverged={5: 2})
    kept = eb.top_at(table, 2, 0.2)
    scores = {c: rs[1]["joint_score"] for c, rs in table.results.items() if c != 5}
    assert len(kept) == round(0.2 * 29) and 5 not in kept
    assert min(scores[c] for c in kept) >= max(scores[c] for c in scores if c not in kept)


def test_final_front_is_every_non_dominated_final_point(tmp_path):
    table, _ = _table(tmp_path)
    ids = sorted(table.results)
    points = to_minimisation(np.array([[table.results[c][-1][o] for o in OBJECTIVES] for c in ids]))
    dominated = lambda p: any(np.all(q <= p) and np.any(q < p) for q in points)  # noqa: E731  (the definition, point by point)
    expected = {c for c, p in zip(ids, points) if not dominated(p)}
    assert eb.final_front(table) == expected and 0 < len(expected) < len(ids)


def test_the_oracle_stops_exactly_the_configurations_it_does_not_keep_at_its_rung(tmp_path):
    table, space = _table(tmp_path)
    keep = eb.top_at(table, 2, 0.25)
    quiet_tune_output()
    searcher = make_searcher(SearchSettings(trials=20, sampler="random", max_concurrent=2, seed=1))
    result = rp.replay(table, searcher, eb.OracleStop(2, keep), workers=2, space=space, max_trials=20)
    epochs_run = {t.trial_id: t.reported for t in result.trials}
    assert {t.config_id in keep for t in result.trials} == {True, False}  # both kinds were drawn
    for trial in result.trials:
        assert epochs_run[trial.trial_id] == (table.epochs if trial.config_id in keep else 2)


def test_the_script_prints_every_rule_beside_fifo_and_writes_its_summary(tmp_path, capsys, monkeypatch):
    table, space = _table(tmp_path, configs=16)
    monkeypatch.setattr(rp.Table, "space", lambda self: space)
    assert eb.main(["--table", table.path, "--seeds", "2", "--trials", "4", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "efficiency_bound_s_curves.json").read_text())
    assert set(summary["rules"]) == set(eb.rules(table)) and "random-fifo" in out and "final-e1" in out
    fifo = summary["rules"]["random-fifo"]
    assert fifo["trial_epochs_per_draw"] == table.epochs and fifo["median_final_hv"] >= summary["target_hv"] - 1e-12
    assert summary["rules"]["rung-e1-q0.05"]["trial_epochs_per_draw"] < summary["rules"]["rung-e1-q0.50"]["trial_epochs_per_draw"]
