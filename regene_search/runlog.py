"""The run's log: every line a run prints also lands, time-stamped, in `RUN/run.log`.

The pipeline opens it (`open_run_log`) and hands the stages a console that writes to both the
user's output and the log. Code that Tune unpickles (the live view) finds the open log with
`current()`, since a file handle cannot travel in Tune's saved state.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from .storage import Location

LOG_NAME = "run.log"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_current: RunLog | None = None


class RunLog:
    """Appends time-stamped lines to a local file; for a run on an object store, the local file is a
    cache that `sync()` uploads whole (object stores cannot append)."""

    def __init__(self, target: Location) -> None:
        self.target = target
        self.local = target.local_copy("logs", fresh=True)  # the run folder's copy is the log so far
        self.local.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.local, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._partial = ""

    def write(self, text: str) -> None:
        """Whole lines get a time stamp; colour and cursor codes are dropped."""
        with self._lock:
            text = self._partial + _ANSI.sub("", text)
            *lines, self._partial = text.split("\n")
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for line in lines:
                self._file.write(f"{stamp}  {line.rstrip()}\n")
            self._file.flush()

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    def sync(self) -> None:
        """Upload the log to a remote run folder (nothing to do on local disk)."""
        if not self.target.is_local:
            with self._lock:
                self._file.flush()
                self.target.write_bytes(self.local.read_bytes())

    def close(self) -> None:
        if self._partial:
            self.write("\n")
        try:
            self.sync()
        except OSError:
            pass
        self._file.close()


class _Tee(io.TextIOBase):
    """What the run's console writes to: the user's stream and the log."""

    def __init__(self, console: Console, log: RunLog) -> None:
        self.console, self.log = console, log  # console.file is looked up per write: a live view may redirect stdout

    def write(self, text: str) -> int:
        self.console.file.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.file.flush()

    def isatty(self) -> bool:
        return self.console.is_terminal


@contextmanager
def open_run_log(run_dir: Location, console: Console) -> Iterator[Console]:
    """A console that prints as `console` does and also into RUN/run.log; the log stays current
    (`current()`) until the block ends."""
    global _current
    log = RunLog(run_dir / LOG_NAME)
    teed = Console(
        file=_Tee(console, log),
        force_terminal=console.is_terminal,
        color_system=console.color_system,
        width=console.width,
        soft_wrap=console.soft_wrap or not console.is_terminal,  # no hard wraps in a Slurm .out or the log
    )
    previous, _current = _current, log
    try:
        yield teed
    finally:
        _current = previous
        log.close()


def current() -> RunLog | None:
    return _current
