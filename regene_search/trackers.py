"""MLflow tracking (`run --mlflow URI`, optional extra): every trial through Tune's MLflow callback,
and each stage's headline metrics in one more MLflow run named `stages`.

The MLflow experiment is named after the run, as the Optuna study is.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .errors import UserError

STAGES_RUN = "stages"


def require_mlflow(uri: str | None) -> None:
    """Refuse `--mlflow` up front, in one line, when MLflow is not installed or the store does not answer."""
    if uri is None:
        return
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError("--mlflow needs MLflow: pip install 'regene-search[mlflow]'") from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; each means the same to the user
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--mlflow {uri}: {text[:300]}") from None


def trial_callbacks(uri: str | None, experiment: str) -> list:
    """Tune's MLflow logger: one MLflow run per trial with its parameters and per-epoch objectives."""
    if uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"regene_search.run": experiment}, save_artifact=False)]


def flat_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """The finite numbers of a stage summary, keyed by their dotted path (`decoder.decoders.ab12.val_mae`)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def log_stage(uri: str | None, experiment: str, stage: str, summary: dict[str, Any], seconds: float) -> None:
    """A finished stage's headline numbers as metrics of the experiment's `stages` run."""
    if uri is None:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.runName = '{STAGES_RUN}'", max_results=1)
    run_id = runs[0].info.run_id if runs else client.create_run(experiment_id, run_name=STAGES_RUN, tags={"regene_search.run": experiment}).info.run_id
    now = int(time.time() * 1000)
    metrics = {**flat_metrics(summary, stage), f"{stage}.seconds": seconds}
    client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
    client.set_tag(run_id, f"{stage}.status", "done")
