"""The on-disk cache of decoded image tensors, keyed by their source files.

Decoding tens of thousands of JPEGs takes longer than a short trial, so the decoded uint8 tensors
are kept as one `torch.save` file per dataset. A key hashes every source file's path, size and
mtime plus a recipe string (target size, crop, channels), so any change to the files or to the
preprocessing makes a new entry instead of serving stale pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from regene_search.errors import DataError

log = logging.getLogger(__name__)

# Bump when decoding changes in a way the recipe strings do not capture.
CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """`$REGENE_SEARCH_CACHE`, else `~/.cache/regene-search`."""
    env = os.environ.get("REGENE_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "regene-search"


def fingerprint(files: Sequence[Path], recipe: str) -> str:
    """A short hash of `recipe` and each file's absolute path, size and mtime, in order."""
    h = hashlib.sha256(f"{CACHE_VERSION}\0{recipe}\n".encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e.strerror})") from None
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cached_tensors(
    cache_dir: Path,
    tag: str,
    files: Sequence[Path],
    recipe: str,
    build: Callable[[], dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Load the tensors for (`files`, `recipe`) from the cache, or `build` and store them."""
    path = cache_dir / "decoded" / f"{tag}-{fingerprint(files, recipe)}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # a damaged cache entry is rebuilt, never fatal
            log.warning("ignoring unreadable cache file %s (%s)", path, e)
    tensors = build()
    try:
        _save_atomic(path, tensors)
    except OSError as e:  # a read-only or full cache costs speed, not correctness
        log.warning("could not write cache file %s (%s)", path, e)
    return tensors


def _save_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(tensors, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
