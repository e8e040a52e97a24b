"""Synthetic learning-curve tables in benchmarks/record_curves.py's Parquet layout, for tests.

Curves are smooth saturating functions of the hyperparameters with crossing shapes (a high
learning rate learns fast and ends lower), so early results only partly predict final ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from regene_search.config import ScoreWeights
from regene_search.search.space import SearchSpace


def write_table(path: Path, space: SearchSpace, *, configs: int, epochs: int, seed: int = 0, dataset: str = "synthetic",
                diverged: dict[int, int] | None = None, cost: float | None = None) -> Path:
    """Write `configs` configurations x `epochs` epochs to `path` (+ `<name>_configs.parquet`).

    `diverged` maps config_id -> epochs recorded before it diverged (0 = only in the configs file).
    `cost` fixes every epoch's cpu_seconds (default: 5-30 s, depending on the configuration).
    """
    diverged = diverged or {}
    rng = np.random.default_rng(seed)
    curves, status_rows = [], []
    for i in range(configs):
        params = {name: domain.sample(rng) for name, domain in space.params.items() if name != "epochs"} | dict(space.fixed)
        params["epochs"] = epochs
        quality, speed = rng.uniform(0, 1), rng.uniform(0.5, 4.0)
        final_acc, final_mae = 0.55 + 0.4 * quality, 0.2 - 0.15 * rng.uniform(0, 1)
        sparse = rng.uniform(0.1, 0.6) if rng.uniform() < 0.5 else 0.0
        epoch_cost = cost if cost is not None else float(rng.uniform(5, 30))
        status = "diverged" if i in diverged else "done"
        recorded = diverged.get(i, epochs)
        elapsed = 0.0
        for epoch in range(1, recorded + 1):
            grow = 1 - math.exp(-epoch / speed)
            acc = float(np.clip(final_acc * grow + 0.1 * (1 - grow) + rng.normal(0, 0.01), 0, 1))
            mae = float(np.clip(final_mae + 0.2 * (1 - grow) + rng.normal(0, 0.003), 0, 1))
            sparsity = float(sparse * grow)
            elapsed += epoch_cost
            curves.append({"config_id": i, **{f"param_{k}": v for k, v in params.items()}, "epoch": epoch, "accuracy": acc,
                           "decoder_mae": mae, "latent_sparsity": sparsity,
                           "joint_score": ScoreWeights().joint_score(accuracy=acc, decoder_mae=mae, latent_sparsity=sparsity),
                           "train_seconds": 0.8 * epoch_cost, "probe_seconds": 0.2 * epoch_cost, "seconds": elapsed,
                           "cpu_seconds": epoch_cost, "status": status, "dataset": dataset})
        status_rows.append({"config_id": i, **{f"param_{k}": v for k, v in params.items()}, "status": status,
                            "epochs_done": recorded, "dataset": dataset})
    pq.write_table(pa.Table.from_pylist(curves), path)
    pq.write_table(pa.Table.from_pylist(status_rows), path.with_name(path.name.replace("_curves", "_configs")))
    return path
