"""What every stage receives: the run folder, the resolved spec, the data and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
import pyarrow.compute as pc
from rich.console import Console

from ..cluster import ClusterInfo
from ..config import RunSpec
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

    def promoted_checkpoints(self) -> dict[str, Location]:
        """trial_id -> classifier checkpoint of each encoder the search promoted."""
        table = read_parquet(self.paths.pareto)
        ids = table.filter(pc.field("promoted")).column("trial_id").to_pylist()
        if not ids:
            raise RunDirError(f"{self.paths.pareto} promotes no trial: run the search stage first")
        return {trial_id: self.paths.checkpoints / f"classifier-{trial_id}.pt" for trial_id in ids}
