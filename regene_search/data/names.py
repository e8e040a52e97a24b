"""Dataset names: the one parser from what a user types (`cifar10`, `imagefolder:PATH`) to a canonical reference.

Light on purpose (no loaders, no torchvision): the run folder layout and the CLI resolve names
before any data is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from regene_search.errors import DataError

# Every registered dataset (`registry.py` describes each); `imagefolder` alone is the generic entry.
FAMILIES = ("mnist", "fashion-mnist", "cifar10", "celeba", "shapes", "imagefolder")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset resolved once: its registry family and, for `imagefolder:PATH`, the absolute folder."""

    family: str
    path: Path | None = None

    @classmethod
    def of(cls, name: DatasetRef | str) -> DatasetRef:
        """Parse `name`; a `DatasetRef` is returned as it is. Raises `DataError` for an unknown name."""
        if isinstance(name, DatasetRef):
            return name
        family, _, path = name.partition(":")
        if family == "imagefolder" and path:
            return cls(family, Path(path).expanduser().resolve())
        if name not in FAMILIES:
            choices = ", ".join(n for n in FAMILIES if n != "imagefolder")
            raise DataError(f"unknown dataset '{name}'; choose from: {choices}, imagefolder:PATH")
        return cls(name)

    @property
    def name(self) -> str:
        """The canonical spelling, written to run.json, Parquet and cache keys: `mnist`, `imagefolder:/abs/path`."""
        return self.family if self.path is None else f"{self.family}:{self.path}"

    @property
    def folder(self) -> str:
        """The dataset's folder in the results root (`imagefolder:PATH` -> `imagefolder-<leaf>`)."""
        if self.path is None:
            return self.family
        return "imagefolder-" + re.sub(r"[^A-Za-z0-9._-]", "_", self.path.name or "root")

    def __str__(self) -> str:
        return self.name
