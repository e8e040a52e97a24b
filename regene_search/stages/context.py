"""What every stage receives: the run folder, the resolved spec, the data and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pyarrow.compute as pc
from rich.console import Console

from ..cluster import ClusterInfo
from ..config import RunSpec
from ..data import DatasetInfo, dataset_info
from ..data.dataset import ImageData
from ..errors import RunDirError
from ..results import RunPaths, read_parquet
from ..storage import Location


@dataclass(frozen=True)
class StageContext:
    paths: RunPaths
    spec: RunSpec
    data: ImageData
    console: Console
    cluster: ClusterInfo | None = None

    def say(self, line: str) -> None:
        """Print a plain line (no markup) to the user and the run log."""
        self.console.print(line, markup=False, highlight=False)

    @cached_property
    def dataset(self) -> DatasetInfo:
        """The registry entry of the run's dataset (image size, classes, whether flips keep labels)."""
        return dataset_info(self.spec.dataset)

    def promoted_checkpoints(self) -> dict[str, Location]:
        """trial_id -> classifier checkpoint of each encoder the search promoted."""
        table = read_parquet(self.paths.pareto)
        ids = table.filter(pc.field("promoted")).column("trial_id").to_pylist()
        if not ids:
            raise RunDirError(f"{self.paths.pareto} promotes no trial: run the search stage first")
        return {trial_id: self.paths.classifier_checkpoint(trial_id) for trial_id in ids}
