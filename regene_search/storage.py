"""A file or folder on local disk or on any filesystem `pyarrow.fs` opens (s3://, gs://, hdfs://, ...)."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import DiskFull, UserError

# What a local results disk keeps free: below it a run stops while it can still save its state.
MIN_FREE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Location:
    """`path` on `fs`: an absolute path on local disk, `bucket/key` on an object store.

    Local locations are also `os.PathLike`, so `open()`, `Path()` and friends take them; remote
    ones refuse, so code that would silently write to local disk fails loudly instead.
    """

    fs: pafs.FileSystem
    path: str
    scheme: str = ""  # "" on local disk

    @classmethod
    def of(cls, target: Location | str | os.PathLike) -> Location:
        """A Location from a local path or a URI; credentials and endpoints come from the usual
        environment variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)."""
        if isinstance(target, Location):
            return target
        text = os.fspath(target)
        if "://" not in text:
            return cls.local(text)
        scheme, rest = text.split("://", 1)
        if "@" in rest.split("/", 1)[0]:  # s3://KEY:SECRET@bucket/...: it would land in run.json, logs and Tune's files
            raise UserError(
                f"{scheme}://***@{rest.split('@', 1)[1]}: credentials do not go in a results URI (they would be stored in "
                "run.json and Tune's state); set them in the environment instead (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "GOOGLE_APPLICATION_CREDENTIALS, ...)"
            )
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise UserError(f"cannot open {text}: {str(exc).splitlines()[0]}") from None
        if isinstance(fs, pafs.LocalFileSystem):
            return cls.local(path)
        if not path.strip("/"):
            raise UserError(f"cannot open {text}: it names no bucket or folder")
        return cls(fs, path.rstrip("/"), text.split("://", 1)[0])

    @classmethod
    def local(cls, path: str | os.PathLike) -> Location:
        return cls(pafs.LocalFileSystem(), str(Path(path).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        return not self.scheme

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self} is not on local disk")
        return self.path

    def __truediv__(self, part: str | os.PathLike) -> Location:
        part = os.fspath(part)
        if self.is_local:
            return Location.local(os.path.join(self.path, part))
        return Location(self.fs, posixpath.normpath(posixpath.join(self.path, part)), self.scheme)

    def at(self, path: str) -> Location:
        """Another path on the same filesystem (as Ray Tune reports them)."""
        return Location.local(path) if self.is_local else Location(self.fs, path.rstrip("/"), self.scheme)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) if not self.is_local else Path(self.path).name

    @property
    def parent(self) -> Location:
        return self / ".."

    def is_within(self, folder: Location) -> bool:
        """True if this is `folder` or lies below it (symlinks resolved on local disk)."""
        if self.fs.type_name != folder.fs.type_name:
            return False
        mine, theirs = self.path.rstrip("/"), folder.path.rstrip("/")
        return mine == theirs or mine.startswith(theirs + "/")

    def relative_to(self, folder: Location) -> str:
        if not self.is_within(folder):
            raise ValueError(f"{self} is not inside {folder}")
        return self.path[len(folder.path.rstrip("/")) :].lstrip("/")

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def make_dir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        """The file's bytes; pyarrow raises `FileNotFoundError` for a missing file on every filesystem."""
        with self.fs.open_input_stream(self.path) as stream:
            return stream.readall()

    def write_bytes(self, data: bytes) -> None:
        """Write through a temp file beside the target, then move it into place: readers never see
        half a file (a rename on local disk, an atomic server-side copy on object stores)."""
        parent = self.parent
        if self.is_local:
            parent.make_dir()
        tmp = parent / f".{self.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.fs.open_output_stream(tmp.path) as stream:
                stream.write(data)
            self.fs.move(tmp.path, self.path)
        except BaseException:
            try:
                self.fs.delete_file(tmp.path)
            except OSError:
                pass
            raise

    def delete(self) -> None:
        self.fs.delete_file(self.path)

    def files(self, *, recursive: bool = True) -> list[Location]:
        """Every file below this folder (or only directly in it), sorted; none if the folder does not exist."""
        selector = pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        found = [info.path for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]
        return [Location(self.fs, path, self.scheme) for path in sorted(found)]

    def check_writable(self) -> None:
        """Refuse early, before anything is written, a root this process cannot write to."""
        if self.is_local:
            root = Path(self.path)
            existing = next(p for p in (root, *root.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise UserError(f"results root {self} is not writable")
            return
        probe = self / f".regene-search-write-check-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.delete()
        except OSError as exc:
            raise UserError(f"results root {self} is not writable: {str(exc).splitlines()[0]}") from None

    def free_bytes(self) -> int | None:
        """Free space on the local disk holding this path; None for object stores (no such limit)."""
        if not self.is_local:
            return None
        path = Path(self.path)
        return shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free

    def check_free_space(self, then: str) -> None:
        """Raise DiskFull, saying `then` (what to do after freeing space), if under MIN_FREE_BYTES are free."""
        free = self.free_bytes()
        if free is not None and free < MIN_FREE_BYTES:
            raise DiskFull(f"{self}: {free / 2**20:.0f} MiB free, under the {MIN_FREE_BYTES / 2**20:.0f} MiB a run keeps to save its state; free some space, then {then}")

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for Ray Tune's RunConfig and restore."""
        return (self.path, None) if self.is_local else (self.path, self.fs)

    def local_copy(self, kind: str, *, fresh: bool) -> Path:
        """A local file standing in for this one on an object store, under the project's cache
        (`<cache>/<kind>/<hash>-<name>`): filled from here when `fresh` or absent, removed when
        this file does not exist. Local files are their own copy."""
        if self.is_local:
            return Path(self.path)
        from .data.cache import default_cache_dir  # not at import: it loads torch

        local = default_cache_dir() / kind / f"{hashlib.sha256(str(self).encode()).hexdigest()[:16]}-{self.name}"
        if fresh or not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                local.write_bytes(self.read_bytes())
            except FileNotFoundError:
                local.unlink(missing_ok=True)
        return local
