"""stages/search.py's LiveTables without Ray: a writer that keeps finished trials' rows writes the
same Parquet files as one that builds every row anew."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq

from regene_search.config import BUDGETS
from regene_search.stages.search import LiveTables

from ..conftest import new_run_folder

TABLE_FILES = ("trials.parquet", "history.parquet", "pareto.parquet", "hypervolume.parquet")


def report(epoch: int, accuracy: float, clock: float) -> dict:
    return {"epoch": epoch, "accuracy": accuracy, "decoder_mae": 0.3 - accuracy / 10, "latent_sparsity": 0.2, "joint_score": accuracy - 0.5,
            "planned_epochs": 2, "diverged": False, "time_total_s": 10.0 * epoch, "timestamp": clock}


def tune_trial(trial_id: str, status: str, reports: list[dict]) -> SimpleNamespace:
    """What LiveTables reads of a Tune trial (and, apart, the reports the live view keeps of it)."""
    return SimpleNamespace(trial_id=trial_id, status=status, config={"lr": 1e-3, "epochs": 2}, last_result=reports[-1] if reports else {}, reports=reports)


def tables(paths) -> dict[str, pd.DataFrame]:
    """The four files, less the run's name (the two writers' runs are named apart)."""
    return {name: pq.read_table(str(paths.dir / name)).drop_columns(["run"]).to_pandas() for name in TABLE_FILES}


def test_kept_rows_write_what_fresh_rows_write(tmp_path):
    kept_paths, fresh_paths = new_run_folder(tmp_path, "mnist", "kept"), new_run_folder(tmp_path, "mnist", "fresh")
    kept = LiveTables(kept_paths, BUDGETS["smoke"])
    a = [report(1, 0.8, 100.0), report(2, 0.9, 110.0)]
    b = [report(1, 0.7, 105.0)]
    steps = [
        [tune_trial("a", "TERMINATED", a), tune_trial("b", "RUNNING", b), tune_trial("c", "PENDING", [])],
        [tune_trial("a", "TERMINATED", a), tune_trial("b", "TERMINATED", b + [report(2, 0.95, 115.0)]), tune_trial("c", "RUNNING", [report(1, 0.6, 120.0)])],
        # `a` retried (its error, then a fresh finish): a new state, so its kept row must not be reused
        [tune_trial("a", "ERROR", a[:1]), tune_trial("b", "TERMINATED", b + [report(2, 0.95, 115.0)]), tune_trial("c", "TERMINATED", [report(1, 0.6, 120.0), report(2, 0.65, 130.0)])],
    ]
    for trials in steps:
        history = {t.trial_id: {r["epoch"]: r for r in t.reports} for t in trials}
        kept(trials, history)
        LiveTables(fresh_paths, BUDGETS["smoke"])(trials, history)
        fresh_tables = tables(fresh_paths)
        for name, table in tables(kept_paths).items():
            pd.testing.assert_frame_equal(table, fresh_tables[name])  # NaN equals NaN here (a failed trial's crowding)
    assert set(kept.finished) == {"a", "b", "c"}
    assert dict(tables(kept_paths)["trials.parquet"][["trial_id", "status"]].values) == {"a": "ERROR", "b": "COMPLETED", "c": "COMPLETED"}
