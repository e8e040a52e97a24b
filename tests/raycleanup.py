"""Stop the Ray processes a test started, found by the test's own Ray temp dir (never by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _names(arg: str, path: str) -> bool:
    """True if one command-line argument names `path` (exactly, as `x=path`, or below it).

    Whole-argument matching, so /tmp/rs-ab never matches another test's /tmp/rs-abc.
    """
    return arg == path or arg.endswith("=" + path) or (path + "/") in arg


def pids_using(temp_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(_names(arg, temp_dir) for arg in args):
            pids.append(int(proc.name))
    return pids


def stop_ray_processes(temp_dir: str, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids_using(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids_using(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
